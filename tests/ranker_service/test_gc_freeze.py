"""The loaded model is out of the cyclic collector's walks: a full collection after startup (or
after a reload) does not walk the ~200k objects that live as long as the process."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from loadtests.stack.servers import RedisServer
from ranker_service.main import create_app
from tests.ranker_service.helpers import ranker_settings


def _walked_by_gc(obj: object) -> bool:
    # gc.get_objects() lists generations 0-2, never the permanent (frozen) one.
    return any(o is obj for o in gc.get_objects())


def test_startup_and_reload_freeze_the_model(
    redis_server: RedisServer, checkpoint_dir: Path, second_checkpoint_dir: Path
) -> None:
    settings = ranker_settings(redis_server.url, checkpoint_dir)
    with TestClient(create_app(settings)) as client:
        runner = client.app.state.ranker.runner
        first = runner.bundle.model
        assert not _walked_by_gc(first) and not _walked_by_gc(first.sequence)
        response = client.post(
            "/admin/reload",
            headers={"Authorization": "Bearer test-token"},
            json={"checkpoint_path": str(second_checkpoint_dir)},
        )
        assert response.status_code == 200, response.text
        second = runner.bundle.model
        assert second is not first
        assert not _walked_by_gc(second) and not _walked_by_gc(second.heads)
