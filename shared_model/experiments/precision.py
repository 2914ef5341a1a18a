"""Serving precision on trained models: a training run's test NE in float32, bf16 and int8.

    python -m shared_model.experiments.precision RUN [RUN ...] --out DIR

Each RUN is a ``python -m shared_model.training`` output folder (``upstream/``, ``online/``,
``metrics.json``). Its dataset is rebuilt from metrics.json and the checkpoint's world config
with the run's seed (the same rows and negatives; ``--rows`` when the run subsampled), and its
models are scored on the test rows, the ranker with its upstream's stale embeddings:

* ``float32``: must reproduce metrics.json's test NE (the check that the rows are the same;
  a run trained with ``--bf16`` recorded the ``bf16 autocast`` one instead);
* ``bf16 autocast``: the ranker under bf16 autocast on its float32 weights (the reference);
* ``bf16 cast weights``: the ranker's Linear weights cast once, as the services run it
  (``shared_model.inference.cast_weights_for_autocast``);
* ``bf16 cast weights, bf16 upstream``: the upstream encoder in the same precision too;
* ``int8``: the ranker's sequence module's Linear layers in dynamic int8, as it serves with
  ``RANKER_QUANTIZE=int8`` (``shared_model.quantize``); the activations' 8-bit scale is taken
  per batch of 512 rows (several users), where the ranker takes it per request or
  micro-batch;
* ``int8, DHEN and heads too``: every eligible Linear layer of the ranker in int8.

It prints, per precision, the ranker's test NE and, over runs, its change against float32
(mean ± std over seeds), with the largest probability change. Scores go through the models'
reference forward (one row per candidate), whose float32 equality with the serving path is
tested (tests/shared_model/test_models.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from shared_model.checkpoint import load_checkpoint
from shared_model.experiments.render import fmt, stats, table, write_report
from shared_model.inference import cast_weights_for_autocast
from shared_model.quantize import quantize_int8
from shared_model.training.pipeline import ranker_batches, upstream_tables
from shared_model.training.trainer import metrics, predict

log = logging.getLogger("shared_model.experiments.precision")


class Mode(NamedTuple):
    bf16: bool  # the ranker under bf16 autocast
    cast: bool  # its Linear weights cast to bf16 at load
    upstream_bf16: bool  # the upstream encoder in bf16 too
    int8: str | None = None  # quantize_int8's ``within``: the submodule put in int8


MODES: dict[str, Mode] = {
    "float32": Mode(False, False, False),
    "bf16 autocast": Mode(True, False, False),
    "bf16 cast weights": Mode(True, True, False),
    "bf16 cast weights, bf16 upstream": Mode(True, True, True),
    "int8": Mode(False, False, False, int8="sequence"),
    "int8, DHEN and heads too": Mode(False, False, False, int8=""),
}


def check_run(run: Path, rows: str = "", days: float = 14.0, modes: dict = MODES) -> dict:
    """One training run's test NE per precision -> {"run", "seed", "results": {mode: ...}}."""
    from shared_model.training.__main__ import load_dataset

    m = json.loads((run / "metrics.json").read_text())
    up_ckpt = load_checkpoint(run / "upstream", stage="upstream")
    on_ckpt = load_checkpoint(run / "online", stage="online")
    world = on_ckpt.metadata.get("world_config") or {}
    data_dir = Path(m["data_dir"]) if m.get("data_dir") else None
    ds = load_dataset(m["dataset"], world, days, m["seed"], data_dir)
    ds.subsample(rows, m["seed"])
    sizes = {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)}
    if sizes != m["rows"]:
        raise SystemExit(f"{run}: rebuilt rows {sizes} != the run's {m['rows']} (pass --rows)")
    on_cfg = on_ckpt.config
    tables: dict[bool, object] = {}
    results: dict[str, dict] = {}
    reference = None
    for name, (bf16, cast, up_bf16, int8) in modes.items():
        if up_bf16 not in tables:
            upstream = up_ckpt.model
            if up_bf16:
                upstream = cast_weights_for_autocast(copy.deepcopy(upstream), torch.bfloat16)
            tables[up_bf16] = upstream_tables(ds, upstream, "stale", up_bf16, ("test",))["test"]
        ranker = on_ckpt.model
        if cast:
            ranker = cast_weights_for_autocast(copy.deepcopy(ranker), torch.bfloat16)
        if int8 is not None:
            ranker = quantize_int8(ranker, within=int8)
        batch = ranker_batches(ds, ds.test, on_cfg.max_seq_len, tables[up_bf16], on_cfg.d_upstream)
        probs, labels = predict(ranker, batch, len(ds.test), 512, torch.device("cpu"), bf16)
        r = metrics(probs, labels, on_cfg.task_weights)
        if reference is None:
            reference = probs
        results[name] = {
            "ne": r.ne,
            "ne_mean": r.ne_mean,
            "auc": r.auc,
            "max_abs_prob_change": float((probs - reference).abs().max()),
        }
        log.info("%s %s: ranker test NE %.4f", run.name, name, r.ne_mean)
    recorded = m["test"]["ranker (upstream embedding)"]["ne_mean"]
    mode = "bf16 autocast" if m.get("bf16") else "float32"
    return {
        "run": run.name,
        "seed": m["seed"],
        "rows": sizes,
        "recorded": {"mode": mode, "ne_mean": recorded},
        "recorded_gap": abs(recorded - results[mode]["ne_mean"]),
        "results": results,
    }


def render(checks: list[dict]) -> str:
    names = list(checks[0]["results"])
    rows = []
    for name in names:
        ne = [c["results"][name]["ne_mean"] for c in checks]
        delta = [c["results"][name]["ne_mean"] - c["results"]["float32"]["ne_mean"] for c in checks]
        worst = max(c["results"][name]["max_abs_prob_change"] for c in checks)
        rows.append([name, fmt(stats(ne)), fmt(stats(np.array(delta) * 1e4), 1), f"{worst:.2e}"])
    seeds = sorted(c["seed"] for c in checks)
    gap = max(c["recorded_gap"] for c in checks)
    return (
        f"{len(checks)} runs, seeds {seeds}, {checks[0]['rows']['test']} test rows each; the "
        "ranker with its upstream's stale embedding; mean ± std over seeds. The runs' recorded "
        f"test NE reproduced here to within {gap:.1e}.\n\n"
        + table(
            ["precision", "ranker test NE", "change vs float32 (1e-4 NE)", "largest |Δp|"], rows
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m shared_model.experiments.precision")
    p.add_argument("runs", nargs="+", type=Path, help="training CLI output folders")
    p.add_argument("--rows", default="", help="the runs' --rows ('' = all rows)")
    p.add_argument("--days", type=float, default=14.0, help="the runs' --days (synthetic)")
    p.add_argument("--out", type=Path, default=None, help="folder for precision.{md,json}")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    checks = [check_run(run, args.rows, args.days) for run in args.runs]
    text = render(checks)
    write_report(args.out, "precision", text, checks)
    return text


if __name__ == "__main__":
    main()
