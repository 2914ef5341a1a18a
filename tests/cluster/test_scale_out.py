"""Two upstream workers in one consumer group and two ranker replicas, as real processes.

One worker is SIGKILLed right after a wave of conversions was published: its partitions move to
the other worker, which redoes what was not committed, so every converted user still ends with
an embedding that saw their newest event. Both rankers read the same Redis with the same
checkpoint and serve the same scores for the same request.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from loadtests.stack.checkpoints import CheckpointPair
from loadtests.stack.local_stack import LocalStack, StackOptions
from loadtests.stack.polling import wait_for
from tests.cluster.conftest import (
    RANKER_ENV,
    UPSTREAM_ENV,
    all_fresh,
    conversion_wave,
    history_lengths,
    post_rank,
    publish,
    rank_body,
)

USERS = [f"scale-user-{i}" for i in range(16)]


def test_killed_worker_loses_no_refresh_and_replicas_agree(
    tmp_path: Path, checkpoints: CheckpointPair
) -> None:
    options = StackOptions(
        run_dir=tmp_path / "run",
        upstream_checkpoint=checkpoints.upstream,
        online_checkpoint=checkpoints.online,
        partitions=4,
        upstream_workers=2,
        upstream_env=UPSTREAM_ENV,
        ranker_env=RANKER_ENV,
    )
    version = checkpoints.upstream_version
    with LocalStack(options) as stack:
        second_ranker = stack.start_ranker_replica()
        base_ms = int(time.time() * 1000)
        publish(stack, conversion_wave(USERS, base_ms))
        wait_for(
            lambda: all_fresh(stack, USERS, base_ms + 2, version), 90, "every user's embedding"
        )

        # Kill one worker while the next wave is in flight: what it had not committed is
        # redone by the survivor once the group rebalances.
        second_ms = int(time.time() * 1000)
        killed = stack.workers[0]
        assert "partitions assigned: [TopicPartition" in killed.log_text()  # it owned some
        publish(stack, conversion_wave(USERS, second_ms))
        killed.kill(signal.SIGKILL)
        killed.wait(timeout=10)
        assert stack.workers[1].running
        wait_for(
            lambda: all_fresh(stack, USERS, second_ms + 2, version), 120, "refreshes after the kill"
        )
        assert history_lengths(stack, USERS) == dict.fromkeys(USERS, 6)

        for user in USERS[:4]:
            body = rank_body(user)
            body["context"]["time_ms"] = second_ms + 60_000  # one request time for both
            answers = [post_rank(url, body) for url in (stack.ranker_url, second_ranker)]
            (status_a, a), (status_b, b) = answers
            assert status_a == status_b == 200, answers
            assert a["upstream"]["status"] == b["upstream"]["status"] == "used"
            assert [c["ad_id"] for c in a["candidates"]] == [c["ad_id"] for c in b["candidates"]]
            for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
                assert ca["score"] == pytest.approx(cb["score"], rel=1e-6, abs=1e-9)
                assert ca["p_ctr"] == pytest.approx(cb["p_ctr"], rel=1e-6, abs=1e-9)
