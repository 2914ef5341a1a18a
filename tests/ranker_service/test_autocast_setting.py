"""RANKER_AUTOCAST reaches the loaded model: the bundle scores in the dtype the setting names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ranker_service.model_runner import load_bundle
from ranker_service.settings import Settings
from tests.ranker_service.helpers import ranker_settings


@pytest.mark.parametrize(("mode", "dtype"), [("none", None), ("bf16", torch.bfloat16)])
def test_the_setting_resolves_into_the_bundle(checkpoint_dir: Path, mode, dtype) -> None:
    settings = ranker_settings("redis://127.0.0.1:1", checkpoint_dir, autocast=mode)
    assert load_bundle(checkpoint_dir, settings).autocast_dtype is dtype


def test_float32_is_the_default_and_the_environment_sets_it(monkeypatch) -> None:
    assert Settings().autocast == "none"
    monkeypatch.setenv("RANKER_AUTOCAST", "auto")
    assert Settings().autocast == "auto"
    monkeypatch.setenv("RANKER_AUTOCAST", "fp16")
    with pytest.raises(ValueError, match="autocast"):
        Settings()


def test_a_bf16_bundle_holds_its_linear_weights_in_bf16(checkpoint_dir: Path) -> None:
    """Cast once at load (shared_model.inference.cast_weights_for_autocast), not per request."""
    settings = ranker_settings("redis://127.0.0.1:1", checkpoint_dir, autocast="bf16")
    model = load_bundle(checkpoint_dir, settings).model
    dtypes = {m.weight.dtype for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert dtypes == {torch.bfloat16}
    fp32 = load_bundle(checkpoint_dir, ranker_settings("redis://127.0.0.1:1", checkpoint_dir))
    assert {m.weight.dtype for m in fp32.model.modules() if isinstance(m, torch.nn.Linear)} == {
        torch.float32
    }
