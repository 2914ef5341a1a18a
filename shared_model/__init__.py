"""shared_model: the LLaTTE + DHEN model package run by both serving stages (torch only)."""

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
