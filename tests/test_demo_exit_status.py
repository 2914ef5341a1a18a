"""The demo's exit status says whether ranking worked: failed ranking requests are a failure."""

from __future__ import annotations

import pytest

from loadtests.stack import demo


class _Client:
    def close(self) -> None:
        pass


class _Stack:
    def __init__(self, options) -> None:
        self.options = options

    def __enter__(self) -> _Stack:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def redis_client(self) -> _Client:
        return _Client()


@pytest.mark.parametrize(("errors", "status"), [(0, 0), (1, 1), (3, 1)])
def test_demo_exit_status_counts_failed_ranking_requests(monkeypatch, tmp_path, errors, status):
    monkeypatch.setattr(demo, "ensure_checkpoints", lambda *a: None)
    monkeypatch.setattr(demo, "LocalStack", _Stack)
    monkeypatch.setattr(demo, "interrupt_on_termination", lambda: None)
    monkeypatch.setattr(demo, "publish_events", lambda *a: None)
    monkeypatch.setattr(demo, "wait_for_worker", lambda *a: None)
    monkeypatch.setattr(demo, "users_with_history", lambda client: ["u1"])
    result = demo.RankingResult([1.0] * (3 - errors), 0, errors, None)
    monkeypatch.setattr(demo, "send_rank_requests", lambda *a: result)
    monkeypatch.setattr(demo, "report", lambda *a: "report")
    assert demo.main(["--requests", "3", "--run-dir", str(tmp_path)]) == status
