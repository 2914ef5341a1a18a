"""The shared helpers of loadtests.stack: checkpoint pairs, polling, foreground commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtests.stack.checkpoints import checkpoint_pair, random_checkpoint
from loadtests.stack.local_stack import run_foreground
from loadtests.stack.polling import wait_for
from shared_model.checkpoint import load_checkpoint
from shared_model.config import tiny_config


def test_checkpoint_pair_agrees_on_the_upstream_version(tmp_path: Path) -> None:
    pair = checkpoint_pair(tmp_path)
    upstream = load_checkpoint(pair.upstream, stage="upstream")
    online = load_checkpoint(pair.online, stage="online")
    assert upstream.model_version == pair.upstream_version
    assert online.model_version == pair.online_version
    assert online.metadata["upstream_model_version"] == pair.upstream_version


def test_random_checkpoint_weights_follow_the_seed(tmp_path: Path) -> None:
    cfg = tiny_config("online")
    first = random_checkpoint(tmp_path / "a", cfg, seed=3)
    assert random_checkpoint(tmp_path / "b", cfg, seed=3) == first
    assert random_checkpoint(tmp_path / "c", cfg, seed=4) != first


def test_wait_for_returns_the_value_or_names_what_it_waited_for() -> None:
    calls = iter([0, None, "ready"])
    assert wait_for(lambda: next(calls), timeout=5, what="x", interval=0) == "ready"
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        wait_for(lambda: False, timeout=0, what="the moon")


def test_run_foreground_returns_the_exit_code_and_stops_on_timeout() -> None:
    assert run_foreground([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    with pytest.raises(Exception, match="timed out"):
        run_foreground([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
