"""Cross-request micro-batching for the inference thread.

When requests queue for the inference thread (see model_runner), scoring them one at a time
pays the fixed per-op cost of every small kernel once per request. The batcher scores what has
queued in one ``score_many``: the users' prefixes in one ``encode_history`` and all candidates
in one ``decode_queries``, each candidate attending only to its own user's prefix.

How it gathers without adding latency:

- every ``submit`` appends a job to the pending deque and schedules one ``_drain`` on the
  inference thread's executor; a drain takes up to ``max_requests`` pending jobs, so when the
  thread is idle the first job is scored at once, and jobs that arrive while it is busy are
  taken together by the next drain (the drains scheduled for them find the deque empty and
  return at once);
- ``max_wait_s`` > 0 lets a drain wait for companions, but never longer than that since the
  oldest job in the batch was submitted (0, the default, never waits);
- ``max_requests`` <= 1 disables batching: every job is scored alone, as before;
- with several inference threads (``settings.inference_threads``), each drain takes its own
  jobs from the deque, so batches run side by side; with ``lanes`` set to their number, a
  drain takes only its share of a backlog, ceil(queued / lanes), so two free threads split it
  instead of one scoring all of it while the other waits. On a CPU a batch of G costs nearly
  G times one request, and the whole batch answers when its last request is scored: sharing
  the backlog shortens the tail (``python -m loadtests.bench.batch_share``).

Isolation: a job whose preparation (decode, tensors) raises fails alone; when ``score_many``
raises for a batch, every job in it is retried alone with ``score``, so one bad request never
fails the others. A job whose caller went away (its future cancelled) is skipped.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.inference import score, score_many
from shared_model.traced import TracedScorer

ScoreInput = tuple[EventBatch, Context, Candidates, UpstreamFeature]  # one user, batch 1


@dataclass
class Prepared:
    """A job's model inputs, built in the inference thread, plus whatever the caller needs
    back (``state``), the autocast dtype to score them in (None: float32) and the model's
    traced scorer when it serves with one."""

    model: torch.nn.Module
    inputs: ScoreInput
    state: Any = None
    autocast_dtype: torch.dtype | None = None
    traced: TracedScorer | None = None  # the model's recorded graphs; None: score eagerly


@dataclass
class Scored:
    """What a job's future resolves to."""

    prepared: Prepared
    probs: torch.Tensor  # (N, 2) [pCTR, pCVR]
    queued_s: float  # submit -> its batch started (waiting for the thread and for companions)
    model_s: float  # wall time of the scoring call that served it (the whole batch's)
    batch_size: int  # requests scored in that call
    prepare_cpu_s: float  # inference-thread CPU of this job's preparation
    score_cpu_s: float  # this job's share of the scoring call's thread CPU


class BatchObserver(Protocol):
    def __call__(self, batch_size: int, queued_s: Sequence[float]) -> None: ...


@dataclass
class _Job:
    prepare: Callable[[], Prepared]
    future: Future[Scored]
    submitted: float


ScoreMany = Callable[..., list[torch.Tensor]]  # (model, inputs, autocast, traced) -> probs


def _score_many(
    model: torch.nn.Module,
    inputs: Sequence[ScoreInput],
    autocast_dtype: torch.dtype | None,
    traced: TracedScorer | None = None,
) -> list[torch.Tensor]:
    if traced is not None:
        return traced.score_many(inputs, autocast_dtype)
    return score_many(model, inputs, autocast_dtype=autocast_dtype)


def _score_one(
    model: torch.nn.Module,
    inputs: ScoreInput,
    autocast_dtype: torch.dtype | None,
    traced: TracedScorer | None = None,
) -> torch.Tensor:
    if traced is not None:
        return traced.score(*inputs, autocast_dtype)
    return score(model, *inputs, shared=True, autocast_dtype=autocast_dtype)


class MicroBatcher:
    """Gathers jobs queued for one executor thread and scores them together.

    Args:
        executor: the single-threaded executor every model call runs on.
        max_requests: the most requests scored in one call; <= 1 scores every job alone.
        max_wait_s: how long a batch may wait for companions after its oldest job arrived
            (0: never; only what queued while the thread was busy is gathered).
        observe: called once per scoring call with its size and each job's queue time.
        score_many_fn: the batched scorer (``shared_model.inference.score_many``).
        lanes: the executor's threads that take from the queue. A drain takes its share of
            what has queued, ceil(queued / lanes) up to ``max_requests``, and leaves the rest
            to the next free thread; 1: a drain takes everything queued up to
            ``max_requests``.
    """

    def __init__(
        self,
        executor: Executor,
        max_requests: int = 8,
        max_wait_s: float = 0.0,
        observe: BatchObserver | None = None,
        score_many_fn: ScoreMany = _score_many,
        lanes: int = 1,
    ) -> None:
        self._executor = executor
        self.lanes = max(1, lanes)
        self.max_requests = max(1, max_requests)
        self.max_wait_s = max(0.0, max_wait_s)
        self._observe = observe
        self._score_many = score_many_fn
        self._pending: collections.deque[_Job] = collections.deque()
        self._arrived = threading.Condition()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet taken by a drain."""
        return len(self._pending)

    def submit(self, prepare: Callable[[], Prepared]) -> Future[Scored]:
        """Queue a job; ``prepare()`` runs in the inference thread and returns its inputs."""
        job = _Job(prepare, Future(), time.perf_counter())
        with self._arrived:
            self._pending.append(job)
            self._arrived.notify()
        self._executor.submit(self._drain)
        return job.future

    # --- in the inference thread ----------------------------------------------------------

    def _take(self) -> list[_Job]:
        with self._arrived:
            if not self._pending:
                return []
            share = -(-len(self._pending) // self.lanes)  # ceil(queued / lanes), at least 1
            batch = [self._pending.popleft() for _ in range(min(share, self.max_requests))]
            deadline = batch[0].submitted + self.max_wait_s
            # Wait for companions only when nothing is left queued: what is left is the other
            # threads' share of a backlog.
            waits = self.max_wait_s > 0 and not self._pending
            while waits and len(batch) < self.max_requests:
                if self._pending:
                    batch.append(self._pending.popleft())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._arrived.wait(remaining):
                    break
        return batch

    def _drain(self) -> None:
        batch = [job for job in self._take() if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        ready: list[tuple[_Job, Prepared, float]] = []
        for job in batch:
            cpu = time.thread_time()
            try:
                prepared = job.prepare()
            except Exception as e:  # delivered to that request alone
                job.future.set_exception(e)
                continue
            ready.append((job, prepared, time.thread_time() - cpu))
        # A reload may land between two submits: score each model's jobs together.
        by_model: dict[tuple, list[tuple[_Job, Prepared, float]]] = {}
        for item in ready:
            key = (id(item[1].model), item[1].autocast_dtype, id(item[1].traced))
            by_model.setdefault(key, []).append(item)
        for group in by_model.values():
            self._score_group(group, started)

    def _score_group(self, group: list[tuple[_Job, Prepared, float]], started: float) -> None:
        queued = [started - job.submitted for job, _, _ in group]
        model, autocast, traced = group[0][1].model, group[0][1].autocast_dtype, group[0][1].traced
        if len(group) > 1:
            cpu, start = time.thread_time(), time.perf_counter()
            try:
                probs = self._score_many(model, [p.inputs for _, p, _ in group], autocast, traced)
            except Exception:  # one bad request: score each alone, below
                probs = None
            else:
                model_s = time.perf_counter() - start
                share = (time.thread_time() - cpu) / len(group)
                if self._observe:
                    self._observe(len(group), queued)
                for (job, p, prep_cpu), q, pr in zip(group, queued, probs, strict=True):
                    job.future.set_result(Scored(p, pr, q, model_s, len(group), prep_cpu, share))
                return
        for (job, p, prep_cpu), q in zip(group, queued, strict=True):
            cpu, start = time.thread_time(), time.perf_counter()
            try:
                pr = _score_one(model, p.inputs, autocast, traced)
            except Exception as e:  # delivered to that request alone
                job.future.set_exception(e)
                continue
            model_s, score_cpu = time.perf_counter() - start, time.thread_time() - cpu
            if self._observe:
                self._observe(1, [q])
            job.future.set_result(Scored(p, pr, q, model_s, 1, prep_cpu, score_cpu))
