"""Train the upstream encoder, then the ranker on its (stale) embeddings; write checkpoints.

    python -m shared_model.training --out artifacts/demo            # the demo models (minutes)
    python -m shared_model.training --out runs/big --days 30 --world '{"n_users": 5000}' \\
        --upstream-config shared_model/configs/upstream.json \\
        --online-config shared_model/configs/online.json --train '{"epochs": 10}'

Writes ``OUT/upstream/`` and ``OUT/online/`` (shared_model checkpoint format; the online one
records ``upstream_model_version``) and ``OUT/metrics.json``. Uses a GPU when present.
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
from shared_model.data.samples import Dataset
from shared_model.training import pipeline
from shared_model.training.trainer import TrainConfig, device_auto

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
log = logging.getLogger("shared_model.training")


def _json_arg(text: str | None, default: Path | None = None) -> dict:
    if text is None:
        return json.loads(default.read_text()) if default else {}
    return json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())


def load_dataset(name: str, world: dict, days: float, seed: int) -> Dataset:
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
            content=world.get("content", "minilm"),
            content_dim=world.get("content_dim", 64),
            seed=seed,
        )
    raise ValueError(f"unknown dataset {name!r}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m shared_model.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dataset", choices=["synthetic", "movielens"], default="synthetic")
    p.add_argument(
        "--world", help="WorldConfig JSON or path (synthetic) / loader options", default=None
    )
    p.add_argument("--days", type=float, default=14.0, help="synthetic days to simulate")
    p.add_argument("--upstream-config", type=Path, default=CONFIGS / "demo_upstream.json")
    p.add_argument("--online-config", type=Path, default=CONFIGS / "demo_online.json")
    p.add_argument("--train", default=None, help="TrainConfig JSON or path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    device = device_auto()
    start = time.perf_counter()

    world = _json_arg(
        args.world, CONFIGS / "demo_world.json" if args.dataset == "synthetic" else None
    )
    tc = TrainConfig.from_dict(
        {**_json_arg(args.train, CONFIGS / "demo_train.json"), "seed": args.seed}
    )
    up_cfg = LLaTTEConfig.from_json(args.upstream_config)
    on_cfg = LLaTTEConfig.from_json(args.online_config)
    if on_cfg.d_upstream != up_cfg.d_summary:
        raise SystemExit(
            f"online d_upstream {on_cfg.d_upstream} != upstream d_summary {up_cfg.d_summary}"
        )
    ds = load_dataset(args.dataset, world, args.days, args.seed)
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

    metrics = {
        "dataset": ds.name,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 1),
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
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
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
