"""The micro-batcher: users waiting for a refresh, coalesced per user, handed out in batches.

The consumer thread submits triggers; the encoder thread takes batches. A user appears at most
once among the pending requests: more triggers for a pending user join its request (they are
"coalesced"). Once a batch is taken its users are in flight, and a new trigger for one of them
opens a fresh request, because the in-flight encode may have read the history before the event
behind that trigger was appended.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class RefreshRequest:
    user_id: str
    trigger_times_ms: list[int]  # event timestamps of the triggers this refresh covers
    enqueued_at: float  # time.monotonic() of the first trigger
    chunks: set[int] = field(default_factory=set)  # OffsetTracker chunks waiting on it


class RefreshBatcher:
    """Args:
    max_size: users per batch.
    max_wait_s: how long the oldest pending user waits for the batch to fill.
    adaptive: (default) batch size and wait follow the queue. Users already pending when the
        encoder asked for its next batch (they queued while it was busy) go out at once, up
        to ``max_size``: under load the batch grows with the backlog and nobody waits twice.
        ``max_wait_s`` then applies only to users arriving while the encoder sits idle.
    """

    def __init__(self, max_size: int, max_wait_s: float, adaptive: bool = True) -> None:
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.adaptive = adaptive
        self._pending: dict[str, RefreshRequest] = {}  # insertion order = arrival order
        self._cond = threading.Condition()
        self._flushing = False
        self._closed = False

    def submit(self, user_id: str, trigger_ms: int, chunk: int | None = None) -> tuple[bool, bool]:
        """Ask for a refresh of user_id.

        Returns:
            coalesced: True when the user was already pending.
            attached: True when ``chunk`` was not yet waiting on the user's request.
        """
        with self._cond:
            request = self._pending.get(user_id)
            coalesced = request is not None
            if request is None:
                request = RefreshRequest(user_id, [], time.monotonic())
                self._pending[user_id] = request
            request.trigger_times_ms.append(trigger_ms)
            attached = chunk is not None and chunk not in request.chunks
            if attached:
                request.chunks.add(chunk)
            self._cond.notify_all()
            return coalesced, attached

    def next_batch(self, timeout: float | None = None) -> list[RefreshRequest]:
        """Block until a batch is due (full, oldest waited max_wait, or flushing); [] on timeout.

        After ``close()`` it still hands out what is pending, then returns [] at once.
        """
        called_at = time.monotonic()
        deadline = None if timeout is None else called_at + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                if self._pending:
                    oldest = next(iter(self._pending.values()))
                    due = oldest.enqueued_at + self.max_wait_s
                    backlog = self.adaptive and oldest.enqueued_at <= called_at
                    if (
                        backlog
                        or len(self._pending) >= self.max_size
                        or now >= due
                        or self._flushing
                        or self._closed
                    ):
                        return self._take()
                    wake = due if deadline is None else min(due, deadline)
                elif self._closed:
                    return []
                else:
                    wake = deadline
                if deadline is not None and now >= deadline:
                    return []
                self._cond.wait(None if wake is None else max(0.0, wake - now))

    def _take(self) -> list[RefreshRequest]:
        users = list(self._pending)[: self.max_size]
        return [self._pending.pop(u) for u in users]

    def set_flushing(self, flushing: bool) -> None:
        """While flushing, pending users are handed out without waiting (drain, shutdown)."""
        with self._cond:
            self._flushing = flushing
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)
