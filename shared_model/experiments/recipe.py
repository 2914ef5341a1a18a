"""One ranker (no upstream) on MovieLens with its validation curve: the recipe's evidence.

    python -m shared_model.experiments.recipe --rows 100000,10000,10000 \\
        --train '{"batch_size": 256, "lr": 0.001, "evals_per_epoch": 8, "patience": 8}'
    python -m shared_model.experiments.recipe ... --demo-tables   # the demo configs' id tables

Prints one line per evaluation (epoch, lr, mean training loss, validation loss and NE) and the
test NE of the best weights; ``--out FILE`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from shared_model.config import LLaTTEConfig
from shared_model.data.row_features import FEATURE_SETS
from shared_model.experiments.sweep import DEFAULT_TRAIN, subsample
from shared_model.training import pipeline
from shared_model.training.__main__ import CONFIGS, load_dataset, resolve_device
from shared_model.training.trainer import TrainConfig

TABLES = ("item_buckets", "ad_buckets", "user_buckets", "advertiser_buckets")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m shared_model.experiments.recipe")
    p.add_argument("--rows", default="100000,10000,10000")
    p.add_argument("--train", default="{}", help=f"TrainConfig overrides of {DEFAULT_TRAIN}")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--content", default="genres")
    p.add_argument("--features", choices=FEATURE_SETS, default="trending")
    p.add_argument("--demo-tables", action="store_true", help="keep the demo id table sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    from shared_model.experiments.__main__ import base_config

    world = {"content": args.content, "content_dim": 64, "features": args.features}
    ds = load_dataset("movielens", world, 0, args.seed, args.data_dir)
    subsample(ds, args.rows, args.seed)
    train = {**DEFAULT_TRAIN, **json.loads(args.train), "seed": args.seed, "progress": False}
    tc = TrainConfig(**train)
    cfg = base_config("online", ds, d_upstream=256)
    if args.demo_tables:
        demo = LLaTTEConfig.from_json(CONFIGS / "demo_online.json")
        cfg = replace(cfg, **{t: getattr(demo, t) for t in TABLES})
    r = pipeline.train_ranker(
        ds, cfg, tc, pipeline.upstream_tables(ds, None), resolve_device(args.device)
    )
    keys = ("epoch", "lr", "train_loss", "loss", "ne_mean")
    for h in r.fit.history:
        print("  ".join(f"{k} {h[k]:.4g}" for k in keys))
    print(f"best validation NE {r.val.ne_mean:.4f}; test NE {r.test.ne_mean:.4f} ({r.test})")
    out = {
        "rows": [len(ds.train), len(ds.val), len(ds.test)],
        "train": tc.__dict__,
        "tables": {t: getattr(cfg, t) for t in TABLES},
        "history": r.fit.history,
        "val": r.val.to_dict(),
        "test": r.test.to_dict(),
    }
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
