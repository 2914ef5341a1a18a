#!/usr/bin/env bash
# Entrypoint step of the CUDA worker image: give each replica a GPU of its own.
#
# Compose has no per-replica device list, so every replica is given all GPUs and takes the
# first one nobody holds: an exclusive flock on GPU_LOCK_DIR/gpu<i>.lock (a volume shared by the
# replicas), kept for the life of the worker because the lock's descriptor survives `exec`.
# A worker that dies releases its GPU with its descriptor. CUDA_VISIBLE_DEVICES already set
# means the operator chose: it is kept as is.
set -euo pipefail

log() { echo "pick-gpu: $*" >&2; }

if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "${CUDA_VISIBLE_DEVICES}" != all ]]; then
  log "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES is set; not picking"
  exec "$@"
fi

lock_dir=${GPU_LOCK_DIR:-/var/lib/llatte/gpu-locks}
if [[ -n "${GPU_COUNT:-}" ]]; then
  count=$GPU_COUNT
else
  count=0
  for dev in /dev/nvidia[0-9]*; do
    [[ -e "$dev" ]] && count=$((count + 1))
  done
fi
if ((count == 0)); then
  log "no GPU is visible in this container: is the NVIDIA Container Toolkit installed and" \
    "the gpu reservation in place? (CPU hosts run the default, CPU image)"
  exit 1
fi

for ((i = 0; i < count; i++)); do
  exec {fd}>"$lock_dir/gpu$i.lock"
  if flock --nonblock "$fd"; then
    export CUDA_VISIBLE_DEVICES=$i CUDA_DEVICE_ORDER=PCI_BUS_ID
    log "this worker uses GPU $i of $count"
    exec "$@"
  fi
  exec {fd}>&-
done
log "all $count GPUs are held by other workers: run at most $count upstream replicas"
exit 1
