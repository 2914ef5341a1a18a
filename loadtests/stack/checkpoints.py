"""Checkpoints with random (seeded) weights, for tests, benchmarks and the load-test ranker.

Latency does not depend on the weights, and most tests need only a model that loads; what
matters is that the pair agrees: the online checkpoint names the upstream checkpoint's model
version (``metadata["upstream_model_version"]``), so the ranker uses the embeddings the worker
writes instead of rejecting them as another model's.

    pair = checkpoint_pair(tmp_path)  # tiny configs, seeds 0 (upstream) and 1 (online)
    pair.upstream, pair.upstream_version, pair.online
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared_model.checkpoint import build_model, save_checkpoint
from shared_model.config import LLaTTEConfig, tiny_config


def random_checkpoint(
    path: Path,
    config: LLaTTEConfig,
    *,
    seed: int = 0,
    upstream_model_version: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Save a model with weights drawn from ``torch.manual_seed(seed)``; returns its version.

    Args:
        path: the checkpoint directory (created).
        config: the model config; its ``stage`` picks the model class.
        seed: the weights are a function of the seed and the config alone.
        upstream_model_version: recorded for an online checkpoint (the embedding version the
            ranker accepts).
        metadata: anything else to record.
    """
    torch.manual_seed(seed)
    meta = dict(metadata or {})
    if upstream_model_version is not None:
        meta["upstream_model_version"] = upstream_model_version
    return save_checkpoint(path, build_model(config), config, metadata=meta)


@dataclass(frozen=True)
class CheckpointPair:
    upstream: Path
    upstream_version: str
    online: Path
    online_version: str


def checkpoint_pair(
    root: Path,
    upstream_config: LLaTTEConfig | None = None,
    online_config: LLaTTEConfig | None = None,
    *,
    seeds: tuple[int, int] = (0, 1),
) -> CheckpointPair:
    """An upstream and an online checkpoint under ``root/upstream`` and ``root/online``; the
    online one expects the upstream one's embeddings. Tiny configs unless given."""
    up_cfg = upstream_config or tiny_config("upstream")
    on_cfg = online_config or tiny_config("online")
    up_version = random_checkpoint(root / "upstream", up_cfg, seed=seeds[0])
    on_version = random_checkpoint(
        root / "online", on_cfg, seed=seeds[1], upstream_model_version=up_version
    )
    return CheckpointPair(root / "upstream", up_version, root / "online", on_version)
