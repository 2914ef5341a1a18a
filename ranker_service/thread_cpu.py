"""CPU time of the ranker's threads, by role: ``ranker_thread_cpu_seconds_total{thread=...}``.

A 2-core ranker has two kinds of busy thread: the event loop (HTTP, validation, the Redis read,
the response) and the inference threads (features and the model). Their CPU rates say which one
limits a replica: an event loop near one core (``rate(...{thread="event_loop"}[1m])`` ~ 1) is
saturated whatever the model costs. Read at each scrape from every thread's own CPU-time clock
(nanoseconds); the CPU of a thread that has exited stays counted, so the counters never go
back.

- ``event_loop``: the thread that serves requests (set by the lifespan);
- ``inference``: threads whose name starts with the inference prefix (``ranker-model``);
- ``other``: every other Python thread (the default executor, the reload thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

ROLES = ("event_loop", "inference", "other")
INFERENCE_THREAD_PREFIX = "ranker-model"  # the inference executor's thread names


def thread_cpu_s(native_id: int) -> float | None:
    """CPU seconds of this process's thread ``native_id`` (its kernel thread id); None once it
    has exited (or where the clock cannot be read).

    Linux's clock id for a thread's CPU time, CPUCLOCK_SCHED (2) | CPUCLOCK_PERTHREAD (4)
    encoded as ~tid << 3, read from the kernel by thread id: unlike
    ``pthread_getcpuclockid``, it never reads the pthread handle of a thread that may just
    have exited, and a thread that has gone is an error (EINVAL), not another thread's clock.
    """
    try:
        return time.clock_gettime((~native_id << 3) | 6)
    except OSError:
        return None


class ThreadCpu(Collector):
    """The collector behind ``ranker_thread_cpu_seconds_total``.

    Args:
        inference_prefix: the name prefix of the inference threads.
    """

    def __init__(self, inference_prefix: str = INFERENCE_THREAD_PREFIX) -> None:
        self.inference_prefix = inference_prefix
        self.loop_thread: int | None = None  # ident of the event loop's thread
        self._lock = threading.Lock()
        self._last: dict[int, tuple[str, float]] = {}  # live thread id -> (role, CPU last read)
        self._retired = dict.fromkeys(ROLES, 0.0)  # CPU of threads gone since, by role

    def role(self, thread: threading.Thread) -> str:
        if thread.ident == self.loop_thread:
            return "event_loop"
        if thread.name.startswith(self.inference_prefix):
            return "inference"
        return "other"

    def seconds(self) -> dict[str, float]:
        """CPU seconds by role, live threads read now plus those that have exited."""
        with self._lock:
            now: dict[int, tuple[str, float]] = {}
            for thread in threading.enumerate():
                if thread.native_id is None:  # not started
                    continue
                cpu = thread_cpu_s(thread.native_id)
                if cpu is not None:
                    now[thread.native_id] = (self.role(thread), cpu)
            for tid, (role, cpu) in self._last.items():
                if tid not in now:  # exited: keep what it had spent at the last read
                    self._retired[role] += cpu
            self._last = now
            out = dict(self._retired)
            for role, cpu in now.values():
                out[role] += cpu
            return out

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ranker_thread_cpu_seconds",
            "CPU time of the ranker's threads by role (event_loop: HTTP, Redis, responses; "
            "inference: features and the model; other).",
            labels=["thread"],
        )
        for role, seconds in self.seconds().items():
            family.add_metric([role], seconds)
        yield family
