"""The console commands a user runs are declared in pyproject.toml and point at real mains."""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


def test_the_user_commands_are_declared() -> None:
    assert set(SCRIPTS) >= {
        "llatte-demo",
        "llatte-stack",
        "llatte-produce",
        "llatte-train",
        "llatte-backfill",
        "llatte-loadtest",
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_entry_point_is_a_callable_main(name: str) -> None:
    module, _, function = SCRIPTS[name].partition(":")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout")
    assert callable(getattr(importlib.import_module(module), function))
