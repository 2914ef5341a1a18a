"""Checkpoints: safetensors weights + a JSON config and metadata. No pickle, ever.

A checkpoint directory holds ``model.safetensors`` and ``config.json``:

    {"format": 1, "model_version": "online-3f2a9c1d7e0b", "config": {...}, "metadata": {...}}

The model version is derived from the config and the weights, so two services that report the
same version run the same function. ``torch.load`` is never used: unpickling a file from disk
executes arbitrary code, which a serving system must not do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.ranker import RankerModel
from shared_model.upstream import UpstreamModel

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed, or does not match the expected config."""


@dataclass
class Checkpoint:
    model: nn.Module
    config: LLaTTEConfig
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)


def build_model(cfg: LLaTTEConfig) -> RankerModel | UpstreamModel:
    return UpstreamModel(cfg) if cfg.is_upstream else RankerModel(cfg)


def model_version(cfg: LLaTTEConfig, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(cfg.to_json().encode())
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return f"{cfg.stage}-{h.hexdigest()[:12]}"


def save_checkpoint(
    path: str | Path, model: nn.Module, cfg: LLaTTEConfig, metadata: dict[str, Any] | None = None
) -> str:
    """Write weights and config to directory ``path``; returns the model version."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    version = model_version(cfg, state)
    # Write to temporary names and rename, so a reader never sees half a checkpoint.
    tmp_weights, tmp_config = path / (WEIGHTS_FILE + ".tmp"), path / (CONFIG_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"model_version": version})
    doc = {
        "format": FORMAT_VERSION,
        "model_version": version,
        "config": cfg.to_dict(),
        "metadata": metadata or {},
    }
    tmp_config.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp_weights.replace(path / WEIGHTS_FILE)
    tmp_config.replace(path / CONFIG_FILE)
    return version


def load_checkpoint(
    path: str | Path,
    expected: LLaTTEConfig | None = None,
    stage: str | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a checkpoint directory; fails with CheckpointError naming what is wrong."""
    path = Path(path)
    weights, config_file = path / WEIGHTS_FILE, path / CONFIG_FILE
    for f in (weights, config_file):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file missing: {f}")
    try:
        doc = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{config_file}: unsupported checkpoint format {doc.get('format')!r}")
    try:
        cfg = LLaTTEConfig.from_dict(doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file}: invalid config: {e}") from None
    if stage is not None and cfg.stage != stage:
        raise CheckpointError(f"{path} holds a {cfg.stage!r} model, expected {stage!r}")
    if expected is not None and cfg != expected:
        diffs = [k for k, v in expected.to_dict().items() if cfg.to_dict().get(k) != v]
        raise CheckpointError(f"{path}: config does not match the expected one in {diffs}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from None
    model = build_model(cfg)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad_shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{weights} does not match its config: missing={missing[:5]} "
            f"unexpected={unexpected[:5]} shape mismatch={bad_shapes[:5]}"
        )
    version = model_version(cfg, state)
    if doc.get("model_version") != version:
        raise CheckpointError(
            f"{path}: model_version {doc.get('model_version')!r} does not match the weights "
            f"and config ({version}); the files are corrupt or were mixed up"
        )
    model.load_state_dict(state)
    model.to(device).eval()
    return Checkpoint(model, cfg, version, dict(doc.get("metadata") or {}))
