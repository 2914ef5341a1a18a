"""Train the upstream encoder, then the ranker on its (stale) embeddings; write checkpoints.

    python -m shared_model.training --out artifacts/demo            # the demo models (minutes)
    python -m shared_model.training --out runs/ml --data-dir DIR --world '{"content": "genres"}'
    python -m shared_model.training --out runs/ml --dataset movielens --threads 1 \\
        --world '{"content": "genres"}' --features basic --rows 100000,10000,10000
    python -m shared_model.training --out runs/big --days 30 --world '{"n_users": 5000}' \\
        --upstream-config shared_model/configs/upstream.json \\
        --online-config shared_model/configs/online.json --train '{"epochs": 10}'

``--data-dir`` reads any MovieLens-format folder (ratings.csv, movies.csv, optional tags.csv);
the configs are fitted to the data (content and float widths, id tables sized to the
catalogue; every change is logged and recorded in the checkpoint's config).

Writes ``OUT/upstream/`` and ``OUT/online/`` (shared_model checkpoint format; the online one
records ``upstream_model_version``), ``OUT/metrics.json`` (test NE and AUC per head of the
upstream model, the ranker with and without the upstream embedding, and the baselines of
``experiments.baselines`` on the same rows, plus the training curves) and ``OUT/curves.png``
when matplotlib is installed. Uses a GPU when present (``--device``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from shared_model.checkpoint import save_checkpoint
from shared_model.config import LLaTTEConfig
from shared_model.data.row_features import FEATURE_SETS
from shared_model.data.samples import Dataset
from shared_model.training import pipeline
from shared_model.training.adapt import fit_to_data
from shared_model.training.trainer import HEADS, EvalResult, TrainConfig, device_auto

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
log = logging.getLogger("shared_model.training")


def _json_arg(text: str | None, default: Path | None = None) -> dict:
    if text is None:
        return json.loads(default.read_text()) if default else {}
    return json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())


def load_dataset(
    name: str, world: dict, days: float, seed: int, data_dir: Path | None = None
) -> Dataset:
    if name == "synthetic":
        from shared_model.data.synthetic import SyntheticWorld, WorldConfig
        from shared_model.data.synthetic_dataset import synthetic_dataset

        cfg = WorldConfig.from_dict(world)
        val_days = max(1.0, days / 7)
        return synthetic_dataset(
            SyntheticWorld(cfg), days=days, val_days=val_days, test_days=val_days
        )
    if name == "movielens":
        from shared_model.data.movielens import movielens_dataset

        return movielens_dataset(
            data_dir=data_dir,
            content=world.get("content", "minilm"),
            content_dim=world.get("content_dim", 64),
            negatives=world.get("negatives", 4),
            seed=seed,
            features=world.get("features", "trending"),
        )
    raise ValueError(f"unknown dataset {name!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return device_auto()
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    return torch.device(name)


def results_table(results: dict[str, EvalResult]) -> str:
    """Markdown table: one row per model, test NE and AUC per head."""
    cols = ["model", "NE mean"] + [f"{m} {h}" for m in ("NE", "AUC") for h in HEADS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in results.items():
        cells = [
            name,
            f"{r.ne_mean:.4f}",
            *(f"{x:.4f}" for x in r.ne),
            *(f"{x:.3f}" for x in r.auc),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m shared_model.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--dataset",
        choices=["synthetic", "movielens"],
        default=None,
        help="default: movielens with --data-dir, else synthetic",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="a MovieLens-format folder (movielens)"
    )
    p.add_argument(
        "--world", help="WorldConfig JSON or path (synthetic) / loader options", default=None
    )
    p.add_argument("--days", type=float, default=14.0, help="synthetic days to simulate")
    p.add_argument(
        "--features",
        choices=FEATURE_SETS,
        default="trending",
        help="movielens candidate floats: basic (year, genres) or trending (also the row's "
        "counts and rates before the request, shared_model.data.row_features)",
    )
    p.add_argument(
        "--rows", default="", help="train,val,test: a seeded subsample of each split ('' = all)"
    )
    p.add_argument("--upstream-config", type=Path, default=CONFIGS / "demo_upstream.json")
    p.add_argument("--online-config", type=Path, default=CONFIGS / "demo_online.json")
    p.add_argument("--train", default=None, help="TrainConfig JSON or path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    args = p.parse_args(argv)
    args.dataset = args.dataset or ("movielens" if args.data_dir else "synthetic")
    if args.data_dir and args.dataset != "movielens":
        raise SystemExit("--data-dir reads a MovieLens-format folder: use --dataset movielens")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()

    world = _json_arg(
        args.world, CONFIGS / "demo_world.json" if args.dataset == "synthetic" else None
    )
    if args.dataset == "movielens":
        world = {**world, "features": args.features}
    train = _json_arg(args.train, CONFIGS / "demo_train.json")
    tc = TrainConfig.from_dict(
        {**train, "seed": args.seed, "bf16": args.bf16 or train.get("bf16", False)}
    )
    up_cfg = LLaTTEConfig.from_json(args.upstream_config)
    on_cfg = LLaTTEConfig.from_json(args.online_config)
    if on_cfg.d_upstream != up_cfg.d_summary:
        raise SystemExit(
            f"online d_upstream {on_cfg.d_upstream} != upstream d_summary {up_cfg.d_summary}"
        )
    ds = load_dataset(args.dataset, world, args.days, args.seed, args.data_dir)
    ds.subsample(args.rows, args.seed)
    for stage, path in (("upstream", args.upstream_config), ("online", args.online_config)):
        cfg, notes = fit_to_data(up_cfg if stage == "upstream" else on_cfg, ds)
        if notes:
            log.warning("%s config %s fitted to the data: %s", stage, path, "; ".join(notes))
        up_cfg, on_cfg = (cfg, on_cfg) if stage == "upstream" else (up_cfg, cfg)
    log.info(
        "%s: %d events, rows train/val/test %d/%d/%d on %s",
        ds.name,
        len(ds.log),
        len(ds.train),
        len(ds.val),
        len(ds.test),
        device,
    )

    up = pipeline.train_upstream(ds, up_cfg, tc, device)
    log.info("upstream  val %s | test %s (%.0fs)", up.val, up.test, up.fit.seconds)
    up_meta = {
        "dataset": ds.name,
        "world_config": world,
        "val": up.val.to_dict(),
        "test": up.test.to_dict(),
    }
    up_version = save_checkpoint(args.out / "upstream", up.model, up_cfg, up_meta)

    tables = pipeline.upstream_tables(ds, up.model, "stale")
    on = pipeline.train_ranker(ds, on_cfg, tc, tables, device)
    log.info("ranker    val %s | test %s (%.0fs)", on.val, on.test, on.fit.seconds)
    on_meta = {
        "upstream_model_version": up_version,
        "dataset": ds.name,
        "world_config": world,
        "upstream_embedding": "stale: at the last conversion before the request",
        "val": on.val.to_dict(),
        "test": on.test.to_dict(),
    }
    on_version = save_checkpoint(args.out / "online", on.model, on_cfg, on_meta)

    # The same ranker without the upstream embedding (what the upstream buys) and the
    # baselines, on the same test rows.
    bare = pipeline.train_ranker(ds, on_cfg, tc, pipeline.upstream_tables(ds, None), device)
    log.info("ranker without upstream: test %s", bare.test)
    from shared_model.experiments.baselines import fit_baselines

    test = {
        "upstream": up.test,
        "ranker (upstream embedding)": on.test,
        "ranker (no upstream)": bare.test,
        **fit_baselines(ds, args.seed),
    }
    metrics = {
        "dataset": ds.name,
        "data_dir": ds.meta.get("data_dir"),
        "features": ds.meta.get("features"),
        "seed": args.seed,
        "rows": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
        "device": str(device),
        "bf16": tc.bf16,
        "seconds": round(time.perf_counter() - start, 1),
        "test": {name: r.to_dict() for name, r in test.items()},
        "upstream": {
            "model_version": up_version,
            "val": up.val.to_dict(),
            "test": up.test.to_dict(),
            "history": up.fit.history,
        },
        "online": {
            "model_version": on_version,
            "upstream_model_version": up_version,
            "val": on.val.to_dict(),
            "test": on.test.to_dict(),
            "history": on.fit.history,
        },
        "online_no_upstream": {"val": bare.val.to_dict(), "history": bare.fit.history},
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"test rows: {len(ds.test)} ({ds.name})\n{results_table(test)}")
    try:
        from shared_model.experiments.plots import plot_curves

        plot_curves(
            args.out / "curves.png",
            {
                "upstream": up.fit.history,
                "ranker": on.fit.history,
                "ranker, no upstream": bare.fit.history,
            },
        )
    except ImportError:  # matplotlib is optional (the 'plots' extra)
        log.info("matplotlib not installed: no curves.png")
    log.info(
        "wrote %s/upstream (%s) and %s/online (%s) in %.0fs",
        args.out,
        up_version,
        args.out,
        on_version,
        metrics["seconds"],
    )
    return metrics


def cli() -> int:
    """The ``llatte-train`` console entry point (exit status 0; main returns the metrics)."""
    main()
    return 0


if __name__ == "__main__":
    main()
