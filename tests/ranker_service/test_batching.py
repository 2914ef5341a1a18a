"""Cross-request micro-batching: the batcher alone, then through the real service.

Batches are forced without sleeps: a job that blocks on an Event holds the inference thread,
requests are submitted, the test polls until the batcher holds all of them, then releases it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient

from loadtests.stack.polling import wait_for
from loadtests.stack.servers import RedisServer
from ranker_service import batching
from ranker_service.batching import MicroBatcher, Prepared
from ranker_service.main import create_app
from ranker_service.settings import Settings
from shared_model.checkpoint import load_checkpoint
from shared_model.inference import score, score_many
from shared_model.traced import TracedScorer
from tests.ranker_service.helpers import (
    make_history,
    rank_body,
    ranker_settings,
    write_embedding,
    write_history,
)
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def model(checkpoint_dir: Path) -> torch.nn.Module:
    return load_checkpoint(checkpoint_dir, stage="online").model


def _inputs(cfg, seed: int, n: int):
    torch.manual_seed(seed)
    return (
        random_events(cfg, [cfg.max_seq_len - seed]),
        random_context(1),
        random_candidates(cfg, n),
        random_upstream(cfg, 1, present=seed % 2 == 0),
    )


def _hold(executor: ThreadPoolExecutor) -> threading.Event:
    """Block the executor's thread until the returned event is set."""
    release = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(30)

    executor.submit(blocked)
    wait_for(started.is_set, timeout=10, what="the inference thread is held")
    return release


class _Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, batch_size: int, queued_s) -> None:
        assert len(queued_s) == batch_size and all(q >= 0 for q in queued_s)
        self.sizes.append(batch_size)


def test_idle_thread_scores_a_request_at_once_alone(executor, model, tiny_cfg) -> None:
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=8, max_wait_s=0.0, observe=seen)
    inputs = _inputs(tiny_cfg, 0, 5)
    result = batcher.submit(lambda: Prepared(model, inputs, "s")).result(30)
    assert seen.sizes == [1] and result.batch_size == 1 and result.prepared.state == "s"
    # exactly the shared-history step (the naive per-candidate reference rounds differently)
    assert torch.equal(result.probs, score(model, *inputs))


def test_requests_queued_while_busy_are_scored_together_and_equal_one_at_a_time(
    executor, model, tiny_cfg
) -> None:
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=8, observe=seen)
    inputs = [_inputs(tiny_cfg, i, n) for i, n in enumerate((3, 1, 7, 4))]
    release = _hold(executor)
    futures = [batcher.submit(lambda x=x: Prepared(model, x, None)) for x in inputs]
    assert batcher.pending == 4
    release.set()
    results = [f.result(30) for f in futures]
    assert seen.sizes == [4] and {r.batch_size for r in results} == {4}
    for x, r in zip(inputs, results, strict=True):
        torch.testing.assert_close(r.probs, score(model, *x), rtol=0, atol=1e-5)


def test_batch_size_is_capped(executor, model, tiny_cfg) -> None:
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=2, observe=seen)
    release = _hold(executor)
    futures = [
        batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in range(5)
    ]
    release.set()
    for f in futures:
        f.result(30)
    assert seen.sizes == [2, 2, 1]


def test_max_requests_one_disables_batching(executor, model, tiny_cfg) -> None:
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=1, observe=seen)
    release = _hold(executor)
    futures = [
        batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in range(3)
    ]
    release.set()
    assert [f.result(30).batch_size for f in futures] == [1, 1, 1]
    assert seen.sizes == [1, 1, 1]


def test_a_failing_preparation_fails_only_its_request(executor, model, tiny_cfg) -> None:
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)

    def broken() -> Prepared:
        raise ValueError("undecodable")

    good = [batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 3))) for i in (0, 1)]
    bad = batcher.submit(broken)
    release.set()
    with pytest.raises(ValueError, match="undecodable"):
        bad.result(30)
    assert [f.result(30).batch_size for f in good] == [2, 2]


def test_a_batch_that_fails_is_retried_one_at_a_time(executor, model, tiny_cfg) -> None:
    """score_many raising for the batch (one request's shapes are wrong): the others are scored
    alone and succeed; the bad one fails alone."""
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)
    good_inputs = [_inputs(tiny_cfg, i, 3) for i in (0, 1)]
    ev, ctx, cands, up = _inputs(tiny_cfg, 2, 3)
    wrong_width = type(up)(torch.randn(1, tiny_cfg.d_upstream + 3), up.present)
    good = [batcher.submit(lambda x=x: Prepared(model, x)) for x in good_inputs]
    bad = batcher.submit(lambda: Prepared(model, (ev, ctx, cands, wrong_width)))
    release.set()
    with pytest.raises((RuntimeError, ValueError)):
        bad.result(30)
    for x, f in zip(good_inputs, good, strict=True):
        r = f.result(30)
        assert r.batch_size == 1
        torch.testing.assert_close(r.probs, score(model, *x), rtol=0, atol=1e-6)


def test_a_cancelled_request_is_skipped(executor, model, tiny_cfg) -> None:
    prepared: list[int] = []
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)

    def job(i: int) -> Prepared:
        prepared.append(i)
        return Prepared(model, _inputs(tiny_cfg, i, 2))

    futures = [batcher.submit(lambda i=i: job(i)) for i in range(3)]
    assert futures[1].cancel()
    release.set()
    assert futures[0].result(30).batch_size == 2 and futures[2].result(30).batch_size == 2
    assert prepared == [0, 2]


def test_bounded_wait_gathers_a_request_that_arrives_within_it(executor, model, tiny_cfg):
    """With max_wait_s, an idle thread waits (at most that long) for companions: the second
    request, submitted once the first is being waited on, joins its batch."""
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=2, max_wait_s=30.0, observe=seen)
    first = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2)))
    wait_for(lambda: batcher.pending == 0, timeout=10, what="the first request is taken")
    second = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 1, 2)))
    assert first.result(30).batch_size == 2 and second.result(30).batch_size == 2
    assert seen.sizes == [2]


@pytest.mark.parametrize(("lanes", "sizes"), [(1, [5]), (2, [1, 1, 3]), (3, [1, 1, 1, 2])])
def test_threads_share_a_backlog(model, tiny_cfg, lanes: int, sizes: list[int]) -> None:
    """With ``lanes`` threads taking from the queue, each drain takes ceil(queued / lanes) of a
    backlog and leaves the rest to the next free thread (queue 5 -> 2 -> 1 -> 0 with two,
    5 -> 3 -> 2 -> 1 -> 0 with three); one lane takes all of it."""
    seen = _Recorder()
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        batcher = MicroBatcher(pool, max_requests=8, observe=seen, lanes=lanes)
        releases = [_hold(pool) for _ in range(lanes)]
        futures = [
            batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in range(5)
        ]
        assert batcher.pending == 5
        for release in releases:
            release.set()
        for f in futures:
            f.result(30)
    assert sorted(seen.sizes) == sizes


def test_a_drain_leaving_a_share_queued_does_not_wait_for_companions(model, tiny_cfg) -> None:
    """Bounded wait with two lanes: drains that leave other threads' share queued score at
    once; the one that takes the last queued request waits for companions, and one that
    arrives joins it."""
    seen = _Recorder()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # max_requests=2: the waiting drain is full, and scores, as soon as the newcomer joins
        # (with more room it would wait out max_wait_s for further companions).
        batcher = MicroBatcher(pool, max_requests=2, max_wait_s=30.0, observe=seen, lanes=2)
        release = _hold(pool)
        futures = [
            batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in range(4)
        ]
        release.set()
        wait_for(
            lambda: len(seen.sizes) == 2 and batcher.pending == 0,
            timeout=30,
            what="two batches scored and the last request taken",
        )
        assert seen.sizes == [2, 1]
        late = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 4, 2)))
        assert late.result(30).batch_size == 2 and futures[3].result(30).batch_size == 2
    assert seen.sizes == [2, 1, 2]


def test_score_many_equals_score_for_mixed_requests(model, tiny_cfg) -> None:
    """The batched scorer the batcher calls, against the reference (<= 1e-5)."""
    inputs = [_inputs(tiny_cfg, i, n) for i, n in enumerate((1, 6, 2))]
    for x, probs in zip(inputs, score_many(model, inputs), strict=True):
        torch.testing.assert_close(probs, score(model, *x), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Through the real service
# ------------------------------------------------------------------------------------------


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_concurrent_requests_batched_by_the_service_equal_one_at_a_time(
    redis_server: RedisServer, redis_client: redis.Redis, checkpoint_dir: Path, tiny_cfg
) -> None:
    k = 4
    bodies = []
    for u in range(k):
        user = f"batch-user-{u}"
        write_history(redis_client, user, make_history(10 + 3 * u, tiny_cfg.content_dim, seed=u))
        if u % 2 == 0:
            write_embedding(redis_client, user, torch.randn(tiny_cfg.d_upstream).tolist())
        bodies.append(rank_body(3 + u, tiny_cfg, user_id=user))

    settings = ranker_settings(
        redis_server.url, checkpoint_dir, batch_max_requests=8, inference_threads=1
    )
    with TestClient(create_app(settings)) as client:
        alone = [client.post("/v1/rank", json=b).json() for b in bodies]
        runner = client.app.state.ranker.runner
        batcher = client.app.state.ranker.ranking.batcher
        release = _hold(runner.executor)
        responses: list = [None] * k

        def send(i: int) -> None:
            responses[i] = client.post("/v1/rank", json=bodies[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        wait_for(lambda: batcher.pending == k, timeout=30, what=f"{k} requests queued")
        release.set()
        for t in threads:
            t.join(30)
        metrics = client.get("/metrics").text

    for a, r in zip(alone, responses, strict=True):
        assert r.status_code == 200, r.text
        b = r.json()
        assert [c["ad_id"] for c in b["candidates"]] == [c["ad_id"] for c in a["candidates"]]
        got = torch.tensor([[c["p_ctr"], c["p_cvr"]] for c in b["candidates"]])
        want = torch.tensor([[c["p_ctr"], c["p_cvr"]] for c in a["candidates"]])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert b["upstream"] == a["upstream"] and b["history_length"] == a["history_length"]
    # k sequential calls of size 1, then one of size k: sum = 2k, count = k + 1.
    assert _metric(metrics, "ranker_model_batch_size_sum") == 2 * k
    assert _metric(metrics, "ranker_model_batch_size_count") == k + 1
    assert _metric(metrics, 'ranker_stage_cpu_seconds_total{stage="score"}') > 0


def test_bf16_jobs_are_scored_in_bf16_and_apart_from_float32_jobs(
    executor, model, tiny_cfg
) -> None:
    """A bf16 job gets the offline bf16 scores; queued with float32 jobs, each keeps its own
    precision (the batcher groups by model and dtype)."""
    recorder = _Recorder()
    batcher = MicroBatcher(executor, max_requests=8, observe=recorder)
    inputs = [_inputs(tiny_cfg, i, 3) for i in range(4)]
    dtypes = [torch.bfloat16, None, torch.bfloat16, None]
    release = _hold(executor)
    futures = [
        batcher.submit(lambda x=x, d=d: Prepared(model, x, None, d))
        for x, d in zip(inputs, dtypes, strict=True)
    ]
    wait_for(lambda: batcher.pending == 4, timeout=10, what="four jobs queued")
    release.set()
    for f, x, d in zip(futures, inputs, dtypes, strict=True):
        probs = f.result(30).probs
        expected = score(model, *x, autocast_dtype=d)
        atol = 2e-2 if d is torch.bfloat16 else 1e-5
        torch.testing.assert_close(probs, expected, rtol=0, atol=atol)
    assert sorted(recorder.sizes) == [2, 2]
    # Each pair exactly as score_many scores it in its precision: bf16 really ran in bf16.
    for d, picked in ((torch.bfloat16, [0, 2]), (None, [1, 3])):
        want = score_many(model, [inputs[i] for i in picked], autocast_dtype=d)
        for i, w in zip(picked, want, strict=True):
            assert torch.equal(futures[i].result(30).probs, w)
    # A bf16 job alone: score()'s bf16 probabilities, not float32's.
    alone = batcher.submit(lambda: Prepared(model, inputs[0], None, torch.bfloat16)).result(30)
    assert alone.batch_size == 1
    assert torch.equal(alone.probs, score(model, *inputs[0], autocast_dtype=torch.bfloat16))
    assert (alone.probs - score(model, *inputs[0])).abs().max() > 1e-4


def test_a_second_inference_thread_scores_while_the_first_is_busy(
    redis_server: RedisServer, redis_client: redis.Redis, checkpoint_dir: Path, tiny_cfg
) -> None:
    """inference_threads=2: with one thread held, a request is still scored (on the other)."""
    settings = ranker_settings(redis_server.url, checkpoint_dir, inference_threads=2)
    body = rank_body(3, tiny_cfg, user_id="lane-user")
    with TestClient(create_app(settings)) as client:
        release = _hold(client.app.state.ranker.runner.executor)
        answered, responses = threading.Event(), []

        def send() -> None:
            responses.append(client.post("/v1/rank", json=body))
            answered.set()

        sender = threading.Thread(target=send)
        sender.start()
        try:
            # The held job lets go after 30 s: an answer before then came from the other thread.
            assert answered.wait(20), "the request waited for the held inference thread"
        finally:
            release.set()
            sender.join(30)
    assert responses[0].status_code == 200, responses[0].text
    assert len(responses[0].json()["candidates"]) == 3


@pytest.mark.parametrize(("share", "lanes"), [(True, 2), (False, 1)])
def test_the_service_shares_the_queue_between_its_inference_threads(
    redis_server: RedisServer, checkpoint_dir: Path, share: bool, lanes: int
) -> None:
    """RANKER_BATCH_SHARE: the batcher splits a backlog between the inference threads, or
    (false) lets a free thread take up to batch_max_requests."""
    settings = ranker_settings(
        redis_server.url, checkpoint_dir, inference_threads=2, batch_share=share
    )
    with TestClient(create_app(settings)) as client:
        assert client.app.state.ranker.ranking.batcher.lanes == lanes


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_traced_model_scores_batches_and_single_jobs_with_its_graphs(
    executor, model, tiny_cfg, dtype
) -> None:
    """Jobs carrying a TracedScorer are scored by it, together when queued together (not one
    by one after a failed batch), in the job's precision."""
    traced = TracedScorer(model)
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=8, observe=seen)
    inputs = [_inputs(tiny_cfg, i, n) for i, n in enumerate((3, 5))]
    release = _hold(executor)
    futures = [batcher.submit(lambda x=x: Prepared(model, x, None, dtype, traced)) for x in inputs]
    release.set()
    results = [f.result(30) for f in futures]
    assert [r.batch_size for r in results] == [2, 2] and seen.sizes == [2]
    for r, want in zip(results, traced.score_many(inputs, dtype), strict=True):
        assert torch.equal(r.probs, want)
    alone = batcher.submit(lambda: Prepared(model, inputs[0], None, dtype, traced)).result(30)
    assert alone.batch_size == 1 and torch.equal(alone.probs, traced.score(*inputs[0], dtype))
    if dtype is not None:  # the graphs of that precision, not float32's
        assert (alone.probs - traced.score(*inputs[0])).abs().max() > 1e-4


class _Clock:
    """The batcher's clock, moved by the test: perf_counter stands still in between (so a
    deadline passes only when the test says); thread_time is the real one."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def perf_counter(self) -> float:
        return self.now

    thread_time = staticmethod(time.thread_time)


class _UntimedCondition(threading.Condition):
    """A condition whose timed waits last until it is notified: a drain waiting for companions
    never races the test's submissions."""

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(None)


def _waiting_batcher(executor, monkeypatch, max_requests: int, max_wait_s: float, untimed=True):
    clock, seen = _Clock(), _Recorder()
    monkeypatch.setattr(batching, "time", clock)
    batcher = MicroBatcher(executor, max_requests, max_wait_s, observe=seen)
    if untimed:
        batcher._arrived = _UntimedCondition()
    return batcher, clock, seen


def test_a_wait_under_a_second_still_gathers(executor, model, tiny_cfg, monkeypatch) -> None:
    batcher, _, seen = _waiting_batcher(executor, monkeypatch, 2, 0.002)
    first = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2)))
    wait_for(lambda: batcher.pending == 0, timeout=10, what="the first request is taken")
    second = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 1, 2)))
    assert first.result(30).batch_size == 2 and second.result(30).batch_size == 2
    assert seen.sizes == [2]


def test_a_waiting_drain_takes_every_companion_until_full(
    executor, model, tiny_cfg, monkeypatch
) -> None:
    batcher, _, seen = _waiting_batcher(executor, monkeypatch, 3, 30.0)
    first = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2)))
    wait_for(lambda: batcher.pending == 0, timeout=10, what="the first request is taken")
    others = [batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in (1, 2)]
    assert [f.result(30).batch_size for f in (first, *others)] == [3, 3, 3]
    assert seen.sizes == [3]


def test_a_waiting_drain_stops_at_its_deadline(executor, model, tiny_cfg, monkeypatch) -> None:
    """Past max_wait_s since the oldest job, a drain scores what it holds, however much room
    is left: a companion that arrives late is taken, and nothing more is waited for."""
    batcher, clock, seen = _waiting_batcher(executor, monkeypatch, 8, 30.0, untimed=False)
    first = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2)))
    wait_for(lambda: batcher.pending == 0, timeout=10, what="the first request is taken")
    with batcher._arrived:  # free only once the drain waits: it has read the clock
        clock.now += 31.0
    second = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 1, 2)))
    assert first.result(20).batch_size == 2 and second.result(20).batch_size == 2
    assert seen.sizes == [2]


def test_a_drain_whose_companions_never_come_scores_alone_at_the_deadline(
    executor, model, tiny_cfg
) -> None:
    seen = _Recorder()
    batcher = MicroBatcher(executor, max_requests=8, max_wait_s=0.05, observe=seen)
    only = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2)))
    assert only.result(30).batch_size == 1 and seen.sizes == [1]


def test_a_failing_first_preparation_leaves_the_rest_of_its_batch(
    executor, model, tiny_cfg
) -> None:
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)

    def broken() -> Prepared:
        raise ValueError("undecodable")

    bad = batcher.submit(broken)
    good = [batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 3))) for i in (0, 1)]
    release.set()
    with pytest.raises(ValueError, match="undecodable"):
        bad.result(30)
    assert [f.result(30).batch_size for f in good] == [2, 2]


def test_jobs_of_another_model_or_scorer_are_scored_apart(executor, model, tiny_cfg) -> None:
    """A reload can land between two submits: each job is scored by the model (and recorded
    graphs, or none) it was prepared for, never by its batch companion's."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    traced = TracedScorer(model)
    batcher = MicroBatcher(executor, max_requests=8)
    x = [_inputs(tiny_cfg, i, 3) for i in range(3)]
    release = _hold(executor)
    futures = [
        batcher.submit(lambda: Prepared(model, x[0])),
        batcher.submit(lambda: Prepared(other, x[1])),
        batcher.submit(lambda: Prepared(model, x[2], traced=traced)),
    ]
    release.set()
    results = [f.result(30) for f in futures]
    assert [r.batch_size for r in results] == [1, 1, 1]
    assert torch.equal(results[0].probs, score(model, *x[0]))
    assert torch.equal(results[1].probs, score(other, *x[1]))
    assert torch.equal(results[2].probs, traced.score(*x[2]))


class _CpuClock(_Clock):
    """Also a thread CPU clock that reads one second more at each reading."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = 0.0

    def thread_time(self) -> float:  # type: ignore[override]
        self.cpu += 1.0
        return self.cpu


def test_each_job_gets_its_own_preparation_cpu_and_a_share_of_the_call(
    executor, model, tiny_cfg, monkeypatch
) -> None:
    monkeypatch.setattr(batching, "time", _CpuClock())
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)
    futures = [
        batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i, 2))) for i in range(4)
    ]
    release.set()
    results = [f.result(30) for f in futures]
    # on this clock every span between two CPU readings is one second, and no wall time passes
    assert [(r.prepare_cpu_s, r.score_cpu_s) for r in results] == [(1.0, 0.25)] * 4
    assert [(r.queued_s, r.model_s) for r in results] == [(0.0, 0.0)] * 4
    alone = batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 5, 2))).result(30)
    assert (alone.batch_size, alone.prepare_cpu_s, alone.score_cpu_s) == (1, 1.0, 1.0)
    assert (alone.queued_s, alone.model_s) == (0.0, 0.0)


def test_a_failed_batch_retries_every_job_after_a_bad_first_one(executor, model, tiny_cfg):
    batcher = MicroBatcher(executor, max_requests=8)
    release = _hold(executor)
    ev, ctx, cands, up = _inputs(tiny_cfg, 2, 3)
    wrong_width = type(up)(torch.randn(1, tiny_cfg.d_upstream + 3), up.present)
    bad = batcher.submit(lambda: Prepared(model, (ev, ctx, cands, wrong_width)))
    good_inputs = [_inputs(tiny_cfg, i, 3) for i in (0, 1)]
    good = [batcher.submit(lambda x=x: Prepared(model, x)) for x in good_inputs]
    release.set()
    with pytest.raises((RuntimeError, ValueError)):
        bad.result(30)
    for x, f in zip(good_inputs, good, strict=True):
        r = f.result(30)
        assert r.batch_size == 1 and torch.equal(r.probs, score(model, *x))


@pytest.mark.parametrize("wait", [0.0, -5.0, None])  # None: the default
def test_no_wait_means_a_lone_job_is_scored_at_once(
    executor, model, tiny_cfg, monkeypatch, wait
) -> None:
    """On a clock that never moves and a condition that only a submission ends, a drain that
    waited for companions would never score: without max_wait_s (or with one <= 0) it does."""
    monkeypatch.setattr(batching, "time", _Clock())
    batcher = MicroBatcher(executor) if wait is None else MicroBatcher(executor, max_wait_s=wait)
    batcher._arrived = _UntimedCondition()
    assert (
        batcher.submit(lambda: Prepared(model, _inputs(tiny_cfg, 0, 2))).result(20).batch_size == 1
    )


def test_the_default_batch_is_the_settings_default(executor, model, tiny_cfg) -> None:
    assert Settings.model_fields["batch_max_wait_ms"].default == 0.0  # as the test above
    seen = _Recorder()
    batcher = MicroBatcher(executor, observe=seen)
    release = _hold(executor)
    n = Settings.model_fields["batch_max_requests"].default
    futures = [
        batcher.submit(lambda i=i: Prepared(model, _inputs(tiny_cfg, i % 4, 2)))
        for i in range(n + 1)
    ]
    release.set()
    for f in futures:
        f.result(30)
    assert seen.sizes == [n, 1]
