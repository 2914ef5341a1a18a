"""shared_model: the LLaTTE + DHEN model package run by both serving stages (torch only).

The names below are imported lazily, on first use: ``import shared_model.contract`` (the
stdlib-only contract the event producer and the load tests use) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS = {
    "Checkpoint": "shared_model.checkpoint",
    "CheckpointError": "shared_model.checkpoint",
    "build_model": "shared_model.checkpoint",
    "load_checkpoint": "shared_model.checkpoint",
    "save_checkpoint": "shared_model.checkpoint",
    "LLaTTEConfig": "shared_model.config",
    "online_config": "shared_model.config",
    "tiny_config": "shared_model.config",
    "upstream_config": "shared_model.config",
    "Candidates": "shared_model.features",
    "Context": "shared_model.features",
    "EventBatch": "shared_model.features",
    "UpstreamFeature": "shared_model.features",
    "encode_user": "shared_model.inference",
    "score": "shared_model.inference",
    "auc": "shared_model.losses",
    "multitask_bce": "shared_model.losses",
    "normalized_entropy": "shared_model.losses",
    "transfer_ratio": "shared_model.losses",
    "RankerModel": "shared_model.ranker",
    "UpstreamModel": "shared_model.upstream",
}

__all__ = [
    "Candidates",
    "Checkpoint",
    "CheckpointError",
    "Context",
    "EventBatch",
    "LLaTTEConfig",
    "RankerModel",
    "UpstreamFeature",
    "UpstreamModel",
    "auc",
    "build_model",
    "encode_user",
    "load_checkpoint",
    "multitask_bce",
    "normalized_entropy",
    "online_config",
    "save_checkpoint",
    "score",
    "tiny_config",
    "transfer_ratio",
    "upstream_config",
]

if TYPE_CHECKING:
    from shared_model.checkpoint import (
        Checkpoint,
        CheckpointError,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )
    from shared_model.config import LLaTTEConfig, online_config, tiny_config, upstream_config
    from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
    from shared_model.inference import encode_user, score
    from shared_model.losses import auc, multitask_bce, normalized_entropy, transfer_ratio
    from shared_model.ranker import RankerModel
    from shared_model.upstream import UpstreamModel


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shared_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
