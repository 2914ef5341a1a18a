"""loadtests.stack.local_stack without servers: what it says when something is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.stack import local_stack
from loadtests.stack.local_stack import LocalStack, StackOptions


def _fake_checkpoints(root: Path) -> StackOptions:
    for name in ("upstream", "online"):
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
    return StackOptions(
        run_dir=root / "run",
        upstream_checkpoint=root / "upstream",
        online_checkpoint=root / "online",
    )


def test_missing_redis_server_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = _fake_checkpoints(tmp_path)
    monkeypatch.setattr(local_stack.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError) as error:
        LocalStack(options).start()
    message = str(error.value)
    assert "apt-get install -y redis-server" in message
    assert "--redis-url" in message  # or another real server, never a fake


def test_missing_checkpoint_says_how_to_make_it(tmp_path: Path) -> None:
    options = StackOptions(run_dir=tmp_path, upstream_checkpoint=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="make train"):
        LocalStack(options).start()
