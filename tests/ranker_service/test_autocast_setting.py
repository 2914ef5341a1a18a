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
