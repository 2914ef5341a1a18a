"""The paper's measurements, small enough for 2 CPU cores. Writes docs/experiments/*.{md,png}.

    python -m shared_model.experiments seqlen --dataset synthetic     # Figure 2: NE vs T
    python -m shared_model.experiments content  --dataset movielens   # Table 2 bottom
    python -m shared_model.experiments scaling  --dataset synthetic   # 6.4: alpha per axis
    python -m shared_model.experiments transfer --dataset synthetic   # Table 3c tau + staleness
    python -m shared_model.experiments baselines --dataset movielens  # the simple baselines

``--data-dir DIR`` reads any MovieLens-format folder instead of ml-latest-small. Every table is
followed by the baselines (``experiments.baselines``) scored on the same test rows. The
multi-seed version of these measurements is ``python -m shared_model.experiments.sweep``.

All runs train the upstream-style model (user-only query tokens, candidate through DHEN) on the
impression task, except ``transfer``, which trains both stages. Seeded; every result is what the
run printed, written to the table as is.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shared_model.config import LLaTTEConfig
from shared_model.data.row_features import FEATURE_SETS
from shared_model.flops import sequence_flops
from shared_model.losses import transfer_ratio
from shared_model.training import pipeline
from shared_model.training.__main__ import CONFIGS, load_dataset, resolve_device
from shared_model.training.adapt import fit_to_data
from shared_model.training.trainer import TrainConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "experiments"
log = logging.getLogger("shared_model.experiments")


TAG = [""]  # --tag: suffix of the output names (e.g. a second seed's run)
BASE: dict = {}  # --base: upstream config overrides applied before each run's own
DEVICE: list = [None]  # --device (None: a GPU when present)
BASELINES: list[dict] = []  # rows printed under every table


def base_config(stage: str, ds, **kw) -> LLaTTEConfig:
    d = json.loads(
        (CONFIGS / f"demo_{'upstream' if stage == 'upstream' else 'online'}.json").read_text()
    )
    if stage == "upstream":
        d.update(BASE)
    d.update(
        content_dim=ds.content_dim,
        n_candidate_floats=ds.n_candidate_floats,
        d_summary=256 if stage == "upstream" else 64,
        d_upstream=256,
    )
    d.update(kw)
    T, L = d["max_seq_len"], d["n_layers"]
    d.setdefault("pyramid", None)
    d["pyramid"] = [T] * (L - 1) + [0]
    cfg, _ = fit_to_data(LLaTTEConfig(**d), ds)  # id tables sized to the catalogue
    return cfg


def run_upstream(ds, tc, **kw) -> dict:
    cfg = base_config("upstream", ds, **kw)
    t = time.perf_counter()
    r = pipeline.train_upstream(ds, cfg, tc, DEVICE[0])
    row = {
        "L": cfg.n_layers,
        "d": cfg.d_model,
        "T": cfg.max_seq_len,
        "content": bool(cfg.content_dim),
        "flops": sequence_flops(cfg).total,
        "val_ne": r.val.ne_mean,
        "test_ne": r.test.ne_mean,
        "test_ne_ctr": r.test.ne[0],
        "test_ne_cvr": r.test.ne[1],
        "test_auc_ctr": r.test.auc[0],
        "seconds": time.perf_counter() - t,
    }
    log.info("%s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return row


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:.3g}"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _plot(path: Path, series: dict, xlabel: str, ylabel: str, logx: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write(
    name: str, title: str, body: str, command: str, meta: dict, raw: dict | None = None
) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    if BASELINES and raw is not None:
        raw = {**raw, "baselines": BASELINES}
        cols = ["model", "test_ne", "test_ne_ctr", "test_ne_cvr", "test_auc_ctr"]
        body += "\n\nBaselines on the same test rows:\n\n" + _table(BASELINES, cols)
    if raw is not None:
        (DOCS / f"{name}.json").write_text(
            json.dumps({"command": command, "meta": meta, **raw}, indent=1, default=str)
        )
    text = f"# {title}\n\nReproduce: `{command}`\n\n{body}\n\nRun: `{json.dumps(meta)}`\n"
    (DOCS / f"{name}.md").write_text(text)
    log.info("wrote %s", DOCS / f"{name}.md")


def fit_alpha(rows: list[dict], ref_ne: float) -> tuple[float, float]:
    """dNE(%) = -alpha log10(C) + beta, dNE relative to ``ref_ne``."""
    x = np.log10([r["flops"] for r in rows])
    y = np.array([100 * (r["test_ne"] - ref_ne) / ref_ne for r in rows])
    if len(rows) < 2:
        return math.nan, math.nan
    slope, beta = np.polyfit(x, y, 1)
    return float(-slope), float(beta)


def seqlen(ds, tc, args, rows: list[dict] | None = None) -> None:
    lengths = [int(x) for x in args.lengths.split(",")]
    if rows is None:  # given: rows recovered from a run's log (see docs/experiments/README.md)
        rows = [run_upstream(ds, tc, n_layers=L, max_seq_len=T) for L in (1, 2) for T in lengths]
    series = {
        f"L={L}": (
            [r["T"] for r in rows if r["L"] == L],
            [r["test_ne"] for r in rows if r["L"] == L],
        )
        for L in (1, 2)
    }
    _plot(
        DOCS / f"seqlen_{ds.name}{TAG[0]}.png",
        series,
        "sequence length T",
        "test NE (mean of heads)",
    )
    body = _table(
        rows,
        [
            "L",
            "T",
            "flops",
            "val_ne",
            "test_ne",
            "test_ne_ctr",
            "test_ne_cvr",
            "test_auc_ctr",
            "seconds",
        ],
    )
    body += f"\n\n![NE vs T](seqlen_{ds.name}{TAG[0]}.png)"
    _write(
        f"seqlen_{ds.name}{TAG[0]}",
        f"NE vs sequence length, {ds.name} (paper Figure 2)",
        body,
        args.command_line,
        args.meta,
        {"rows": rows},
    )


def content(ds, tc, args) -> None:
    rows = [
        run_upstream(ds, tc, n_layers=L, content_dim=cd)
        for L in (1, 4)
        for cd in (0, ds.content_dim)
    ]
    ref = rows[1]["test_ne"]  # 1 layer with content, the paper's reference row
    for r in rows:
        r["dNE_%"] = 100 * (r["test_ne"] - ref) / ref
    body = _table(
        rows, ["L", "content", "T", "val_ne", "test_ne", "dNE_%", "test_auc_ctr", "seconds"]
    )
    _write(
        f"content_{ds.name}{TAG[0]}",
        f"Content embeddings on/off, {ds.name} (paper Table 2 bottom)",
        body + "\n\ndNE relative to the 1-layer model with content.",
        args.command_line,
        args.meta,
        {"rows": rows},
    )


def scaling(ds, tc, args) -> None:
    L0, d0, T0 = 1, 32, 64

    def point(L=L0, d=d0, T=T0):  # d_ffn = 2d everywhere, so the three axes share one centre
        return dict(n_layers=L, d_model=d, max_seq_len=T, d_ffn=2 * d)

    axes = {
        "L": [point(L=L) for L in (1, 2, 4)],
        "d": [point(d=d) for d in (16, 32, 64)],
        "T": [point(T=T) for T in (16, 32, 64, 128)],
    }
    rows, cache = [], {}
    for axis, points in axes.items():
        for kw in points:
            key = json.dumps(kw, sort_keys=True)
            if key not in cache:
                cache[key] = run_upstream(ds, tc, head_dim=16, n_heads=2, **kw)
            rows.append({"axis": axis, **cache[key]})
    ref = cache[json.dumps(point(), sort_keys=True)]
    fits = []
    series = {}
    for axis in axes:
        pts = [r for r in rows if r["axis"] == axis]
        alpha, beta = fit_alpha(pts, ref["test_ne"])
        fits.append({"axis": axis, "alpha_%_per_decade": alpha, "beta": beta})
        series[axis] = (
            [r["flops"] for r in pts],
            [100 * (r["test_ne"] - ref["test_ne"]) / ref["test_ne"] for r in pts],
        )
    _plot(
        DOCS / f"scaling_{ds.name}{TAG[0]}.png",
        series,
        "sequence FLOPs / sample",
        "dNE (%) vs L=1,d=32,T=64",
    )
    body = (
        _table(rows, ["axis", "L", "d", "T", "flops", "val_ne", "test_ne", "seconds"])
        + "\n\nFit dNE(%) = -alpha log10(C_seq) + beta per axis:\n\n"
        + _table(fits, ["axis", "alpha_%_per_decade", "beta"])
        + f"\n\n![scaling](scaling_{ds.name}{TAG[0]}.png)"
    )
    _write(
        f"scaling_{ds.name}{TAG[0]}",
        f"Scaling sweep over L, d, T, {ds.name} (paper 6.4, Table 3)",
        body,
        args.command_line,
        args.meta,
        {"rows": rows, "fits": fits},
    )


def transfer(ds, tc, args) -> None:
    T = args.upstream_T
    # Iso-FLOPs pair (paper Table 3c): the model-heavy upstream gets the longest history whose
    # sequence FLOPs do not exceed the seq-heavy one's.
    seq_flops = sequence_flops(base_config("upstream", ds, n_layers=1, d_model=64, max_seq_len=T))
    Tm = max(
        t
        for t in range(4, T + 1)
        if sequence_flops(base_config("upstream", ds, n_layers=3, d_model=64, max_seq_len=t)).total
        <= seq_flops.total
    )
    ups = {
        "baseline (L=1, d=32, T=32)": dict(n_layers=1, d_model=32, max_seq_len=32),
        f"seq-heavy (L=1, d=64, T={T})": dict(n_layers=1, d_model=64, max_seq_len=T),
        f"model-heavy (L=3, d=64, T={Tm})": dict(n_layers=3, d_model=64, max_seq_len=Tm),
    }
    on_cfg = base_config("online", ds, d_upstream=256)
    results = {}
    for name, kw in ups.items():
        cfg = base_config("upstream", ds, **kw)
        r = pipeline.train_upstream(ds, cfg, tc, DEVICE[0])
        row = {"upstream": name, "flops": sequence_flops(cfg).total, "ne_up": r.test.ne_mean}
        for mode in ("stale", "fresh"):
            tables = pipeline.upstream_tables(ds, r.model, mode, tc.bf16)
            ranker = pipeline.train_ranker(ds, on_cfg, tc, tables, DEVICE[0])
            row[f"ne_down_{mode}"] = ranker.test.ne_mean
        results[name] = row
        log.info("%s", row)
    no_upstream = pipeline.upstream_tables(ds, None)
    none = pipeline.train_ranker(ds, on_cfg, tc, no_upstream, DEVICE[0]).test.ne_mean
    base = next(iter(results.values()))
    rows = list(results.values())
    for r in rows[1:]:
        for mode in ("stale", "fresh"):
            r[f"tau_{mode}_%"] = 100 * transfer_ratio(
                base[f"ne_down_{mode}"], r[f"ne_down_{mode}"], base["ne_up"], r["ne_up"]
            )
        r["dNE_up_%"] = 100 * (r["ne_up"] - base["ne_up"]) / base["ne_up"]
        r["dNE_down_stale_%"] = (
            100 * (r["ne_down_stale"] - base["ne_down_stale"]) / base["ne_down_stale"]
        )
    body = _table(
        rows,
        [
            "upstream",
            "flops",
            "ne_up",
            "ne_down_stale",
            "ne_down_fresh",
            "dNE_up_%",
            "dNE_down_stale_%",
            "tau_stale_%",
            "tau_fresh_%",
        ],
    )
    body += (
        f"\n\nRanker without any upstream embedding: test NE {none:.4f}. The ranker is the "
        f"same architecture ({on_cfg.n_layers} layers, T={on_cfg.max_seq_len}) for every "
        "upstream; stale = embedding computed at the user's last conversion before the "
        "request (production), fresh = at the request (oracle)."
    )
    _write(
        f"transfer_{ds.name}{TAG[0]}",
        f"Transfer ratio and staleness, {ds.name} (paper Table 3c)",
        body,
        args.command_line,
        args.meta,
        {"rows": rows, "ne_down_no_upstream": none},
    )


def baselines(ds, tc, args) -> None:
    body = "Fitted on the training rows, scored on the test rows (experiments.baselines)."
    _write(
        f"baselines_{ds.name}{TAG[0]}",
        f"Baselines, {ds.name}",
        body,
        args.command_line,
        args.meta,
        {"rows": []},
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m shared_model.experiments")
    p.add_argument("experiment", choices=["seqlen", "content", "scaling", "transfer", "baselines"])
    p.add_argument("--dataset", choices=["synthetic", "movielens"], default="synthetic")
    p.add_argument("--data-dir", type=Path, default=None, help="a MovieLens-format folder")
    p.add_argument("--content", default="minilm", help="movielens content: minilm|genres|none")
    p.add_argument("--features", choices=FEATURE_SETS, default="trending", help="movielens floats")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    p.add_argument(
        "--world",
        default='{"seed": 0, "n_users": 200, "n_items": 2000, "n_ads": 200, "n_brands": 40}',
    )
    p.add_argument("--days", type=float, default=21.0)
    p.add_argument("--lengths", default="16,32,64,128,256")
    p.add_argument("--upstream-T", type=int, default=192)
    p.add_argument(
        "--train",
        default='{"epochs": 3, "batch_size": 256, "lr": 0.005, '
        '"max_train_rows": 20000, "patience": 1}',
    )
    p.add_argument(
        "--rows",
        default="",
        help="train,val,test: a fixed seeded subsample of each split (0 = all of it)",
    )
    p.add_argument("--base", default="{}", help="upstream config overrides (JSON)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = p.parse_args(argv)
    TAG[0] = args.tag
    BASE.update(json.loads(args.base))
    DEVICE[0] = resolve_device(args.device)
    if args.data_dir:
        args.dataset = "movielens"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    world = (
        json.loads(args.world)
        if args.dataset == "synthetic"
        else {"content_dim": 64, "content": args.content, "features": args.features}
    )
    ds = load_dataset(args.dataset, world, args.days, args.seed, args.data_dir)
    ds.subsample(args.rows, args.seed)
    tc = TrainConfig(
        **{**json.loads(args.train), "seed": args.seed, "progress": False, "bf16": args.bf16}
    )
    from shared_model.experiments.baselines import fit_baselines, rows

    BASELINES[:] = rows(fit_baselines(ds, args.seed))
    args.command_line = "python -m shared_model.experiments " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    args.meta = {
        "dataset": ds.name,
        "rows": [len(ds.train), len(ds.val), len(ds.test)],
        "train": tc.__dict__,
        "world": world,
        "base": BASE,
        "torch_threads": torch.get_num_threads(),
        "data_dir": ds.meta.get("data_dir"),
        "features": ds.meta.get("features"),
        "device": str(DEVICE[0]),
    }
    experiments = {"seqlen": seqlen, "content": content, "scaling": scaling}
    experiments.update(transfer=transfer, baselines=baselines)
    experiments[args.experiment](ds, tc, args)


if __name__ == "__main__":
    main()
