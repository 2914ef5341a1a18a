"""The paper's measurements with several seeds, mean ± std everywhere; one command, one folder.

    python -m shared_model.experiments.sweep --out DIR --seeds 0,1,2 --jobs 3 \\
        --device cuda --bf16 --rows '' --time-budget 120

Each seed (a process of its own with ``--jobs``) redraws the negatives, the row subsample and
the initialisation, and trains, in this order (each step skipped once ``--time-budget``
seconds have passed, and a model still training then stops at its next step with its best
weights so far, so a bounded run ends with a report in about the budget):

1. the baselines (base rate, popularity, logreg, gbdt) on the test rows;
2. the deepest, longest upstream, then the ranker with its (stale) embedding and without one;
3. NE vs T at each depth (paper Figure 2); content off at each depth (Table 2 bottom);
4. iso-FLOPs transfer: seq-heavy (L=1, T max) vs model-heavy (L=3, T matched) upstreams, a
   ranker on each one's stale embedding, tau against the L=1, T min upstream (Table 3c);
   fresh embeddings for the seq-heavy and the deepest upstream (staleness).

Writes ``DIR/runs/seed<k>.jsonl`` (one line per trained model or baseline, as it finishes),
then renders ``DIR/sweep.md``, ``DIR/sweep.json`` and ``DIR/*.png`` from every run file
(``--render-only`` re-renders). All runs share the upstream ``--base`` overrides; the ranker
is the demo online config (L=2, d=64, T=32) reading a 256-d upstream embedding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from shared_model.data.row_features import FEATURE_SETS
from shared_model.flops import sequence_flops
from shared_model.training import pipeline
from shared_model.training.__main__ import load_dataset, resolve_device
from shared_model.training.adapt import fit_to_data
from shared_model.training.trainer import TrainConfig

log = logging.getLogger("shared_model.experiments.sweep")

# One epoch over all rows with early stopping on validation NE, evaluated often: on
# ml-latest-small the validation NE turns up within the first epoch at lr 3e-3 (batch 256),
# while lr 1e-3 falls steadily to the end (docs/experiments/README.md, "Training recipe").
DEFAULT_TRAIN = {
    "epochs": 1,
    "batch_size": 512,
    "lr": 1.5e-3,
    "evals_per_epoch": 8,
    "patience": 3,
    "warmup": 0.05,
}


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def subsample(ds, rows: str, seed: int) -> None:
    """--rows train,val,test: a seeded subsample of each split (0 or '' = all of it)."""
    ds.subsample(rows, seed)


class SeedRun:
    """One seed's models, each emitted to the run file as it finishes."""

    def __init__(self, args, seed: int) -> None:
        from shared_model.experiments.__main__ import base_config

        self.args, self.seed, self.base_config = args, seed, base_config
        self.device = resolve_device(args.device)
        world = {"content": args.content, "content_dim": 64, "negatives": args.negatives}
        world["features"] = args.features
        self.ds = load_dataset(args.dataset, world, args.days, seed, args.data_dir)
        subsample(self.ds, args.rows, seed)
        train = {**DEFAULT_TRAIN, **json.loads(args.train)}
        self.tc = TrainConfig(**{**train, "seed": seed, "progress": False, "bf16": args.bf16})
        self.base = json.loads(args.base)
        self.start = time.perf_counter()
        self.upstreams: dict[tuple, torch.nn.Module] = {}
        path = args.out / "runs" / f"seed{seed}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")  # noqa: SIM115 (closed in run)
        self.emit(
            {
                "part": "meta",
                "command": args.command_line,
                "dataset": self.ds.name,
                "data_dir": self.ds.meta.get("data_dir"),
                "features": self.ds.meta.get("features"),
                "rows": [len(self.ds.train), len(self.ds.val), len(self.ds.test)],
                "train": self.tc.__dict__,
                "base": self.base,
                "device": str(self.device),
                "machine": machine(),
                "depths": _ints(args.depths),
                "lengths": _ints(args.lengths),
                "t_iso": self.iso_length(),
            }
        )

    def emit(self, row: dict) -> None:
        row = {"seed": self.seed, "elapsed_s": round(time.perf_counter() - self.start, 1), **row}
        self.file.write(json.dumps(row, default=float) + "\n")
        self.file.flush()

    def over_budget(self) -> bool:
        return bool(self.args.time_budget) and self.seconds_left() <= 0

    def seconds_left(self) -> float:
        return self.args.time_budget - (time.perf_counter() - self.start)

    def train_config(self) -> TrainConfig:
        """The sweep's TrainConfig; under a time budget a model also stops at its end."""
        if not self.args.time_budget:
            return self.tc
        return replace(self.tc, max_seconds=max(1.0, self.seconds_left()))

    def config(self, stage: str, **kw):
        overrides = {**self.base, **kw} if stage == "upstream" else kw
        cfg, _ = fit_to_data(self.base_config(stage, self.ds, **overrides), self.ds)
        return cfg

    def upstream(self, L: int, T: int, content: bool = True):
        key = (L, T, content)
        if key in self.upstreams or self.over_budget():
            return self.upstreams.get(key)
        kw = {"n_layers": L, "max_seq_len": T}
        if not content:
            kw["content_dim"] = 0
        cfg, tc = self.config("upstream", **kw), self.train_config()
        t = time.perf_counter()
        r = pipeline.train_upstream(self.ds, cfg, tc, self.device)
        self.emit(
            {
                "part": "upstream",
                "L": L,
                "T": T,
                "d": cfg.d_model,
                "content": content,
                "flops": sequence_flops(cfg).total,
                **_result(r, time.perf_counter() - t, tc),
            }
        )
        self.upstreams[key] = r.model
        return r.model

    def ranker(self, key: tuple | None, mode: str) -> None:
        model = None if key is None else self.upstreams.get(key)
        if (key is not None and model is None) or self.over_budget():
            return
        t = time.perf_counter()
        tables = pipeline.upstream_tables(self.ds, model, mode if model else "none", self.tc.bf16)
        cfg, tc = self.config("online", d_upstream=256), self.train_config()
        r = pipeline.train_ranker(self.ds, cfg, tc, tables, self.device)
        self.emit(
            {
                "part": "ranker",
                "upstream": "none" if key is None else _key_name(key),
                "mode": mode if model else "none",
                **_result(r, time.perf_counter() - t, tc),
            }
        )

    def iso_length(self) -> int:
        """The model-heavy (L=3) upstream's T: the longest whose sequence FLOPs do not exceed
        the seq-heavy (L=1, T max) one's (paper Table 3c)."""
        t_max = max(_ints(self.args.lengths))
        seq = sequence_flops(self.config("upstream", n_layers=1, max_seq_len=t_max)).total
        fits = [
            t
            for t in range(1, t_max + 1)
            if sequence_flops(self.config("upstream", n_layers=3, max_seq_len=t)).total <= seq
        ]
        return max(fits, default=1)

    def run(self) -> None:
        from shared_model.experiments.baselines import fit_baselines

        a = self.args
        depths, lengths = _ints(a.depths), _ints(a.lengths)
        deep, t_max, t_min = max(depths), max(lengths), min(lengths)
        t_mid = lengths[len(lengths) // 2]
        for name, r in fit_baselines(self.ds, self.seed).items():
            self.emit({"part": "baseline", "model": name, **_metrics(r)})
        if self.upstream(deep, t_max) is not None:
            self.ranker((deep, t_max, True), "stale")
        self.ranker(None, "none")
        for L in sorted(depths, reverse=True):  # the deepest first: the T target reads it
            for T in lengths:
                self.upstream(L, T)
        for L in depths:
            self.upstream(L, t_mid, content=False)
        t_iso = self.iso_length()
        self.upstream(3, t_iso)
        for key in ((1, t_min, True), (1, t_max, True), (3, t_iso, True)):
            self.ranker(key, "stale")
        for key in ((1, t_max, True), (deep, t_max, True)):
            self.ranker(key, "fresh")
        self.emit({"part": "done", "over_budget": self.over_budget()})
        self.file.close()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _key_name(key: tuple) -> str:
    L, T, content = key
    return f"L={L} T={T}" + ("" if content else " no content")


def _metrics(r) -> dict:
    return {
        "test_ne": r.ne_mean,
        "test_ne_ctr": r.ne[0],
        "test_ne_cvr": r.ne[1],
        "test_auc_ctr": r.auc[0],
        "test_auc_cvr": r.auc[1],
    }


def _result(r, seconds: float, tc: TrainConfig) -> dict:
    return {
        **_metrics(r.test),
        "cut_by_time": bool(tc.max_seconds) and r.fit.seconds >= tc.max_seconds,
        "val_ne": r.val.ne_mean,
        "best_epoch": r.fit.best_epoch,
        "steps": r.fit.steps,
        "seconds": round(seconds, 1),
        "history": r.fit.history,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m shared_model.experiments.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1, help="seeds run as this many processes")
    p.add_argument("--dataset", choices=["movielens", "synthetic"], default="movielens")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--content", default="genres", help="movielens content: genres|minilm|none")
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--features", choices=FEATURE_SETS, default="trending", help="movielens floats")
    p.add_argument("--days", type=float, default=21.0, help="synthetic days")
    p.add_argument("--rows", default="", help="train,val,test subsample ('' = all rows)")
    p.add_argument("--depths", default="1,3")
    p.add_argument("--lengths", default="16,64,256")
    p.add_argument("--base", default="{}", help="upstream config overrides (JSON)")
    p.add_argument("--train", default="{}", help=f"TrainConfig overrides of {DEFAULT_TRAIN}")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: cores / jobs)")
    p.add_argument("--time-budget", type=float, default=0, help="seconds per seed (0: none)")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--no-render", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--command-line", default=None, help=argparse.SUPPRESS)  # the parent's
    args = p.parse_args(argv)
    args.command_line = args.command_line or "python -m shared_model.experiments.sweep " + (
        shlex.join(argv if argv is not None else sys.argv[1:])
    )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from shared_model.experiments.render import render

    if args.render_only:
        render(args.out)
        return
    seeds = _ints(args.seeds)
    jobs = max(1, min(args.jobs, len(seeds)))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // jobs))
    if jobs == 1:
        for seed in seeds:
            SeedRun(args, seed).run()
    else:  # one process per seed, at most ``jobs`` at a time
        argv = sys.argv[1:] if argv is None else list(argv)
        pending, running, failed = list(seeds), [], []
        while pending or running:
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                cmd = [sys.executable, "-m", "shared_model.experiments.sweep", *argv]
                cmd += ["--seeds", str(seed), "--jobs", "1", "--no-render"]
                cmd += ["--command-line", args.command_line]
                cmd += ["--threads", str(torch.get_num_threads())]
                running.append(subprocess.Popen(cmd))
            running[0].wait()
            failed += [p.args for p in running if p.poll() not in (None, 0)]
            running = [p for p in running if p.poll() is None]
    if not args.no_render:
        render(args.out)
    if jobs > 1 and failed:  # the report holds the seeds that finished; say which did not
        raise SystemExit(f"{len(failed)} seed process(es) failed: {failed}")


if __name__ == "__main__":
    main()
