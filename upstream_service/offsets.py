"""Which Kafka offsets are safe to commit: those whose history appends and refreshes are durable.

Each ``poll()`` result is one *chunk*: the next offset per partition it covers, plus the number
of refreshes it still waits for. The history appends (and dead-letter sends) of a chunk are
finished before it is sealed; a refresh resolves its chunks only after its embedding write
returned. Chunks complete out of order (batches do), but offsets advance only over the
completed prefix, so a crash at any point redoes at least everything that was not durable.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from kafka.structs import TopicPartition


@dataclass
class _Chunk:
    offsets: dict[TopicPartition, int]  # next offset to consume, per partition
    outstanding: int = 0  # refreshes not yet written
    sealed: bool = False  # all triggers of the chunk were submitted


class OffsetTracker:
    def __init__(self) -> None:
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()
        self._next_id = 0
        self._ready: dict[TopicPartition, int] = {}  # completed, not yet handed to commit
        self._cond = threading.Condition()

    def open(self, offsets: dict[TopicPartition, int]) -> int:
        with self._cond:
            chunk_id = self._next_id
            self._next_id += 1
            self._chunks[chunk_id] = _Chunk(dict(offsets))
            return chunk_id

    def add_dependency(self, chunk_id: int) -> None:
        with self._cond:
            self._chunks[chunk_id].outstanding += 1

    def resolve(self, chunk_ids: Iterable[int]) -> None:
        """One refresh each of these chunks waited for is durable (unknown ids are ignored)."""
        with self._cond:
            for chunk_id in chunk_ids:
                chunk = self._chunks.get(chunk_id)
                if chunk is not None:
                    chunk.outstanding -= 1
            self._advance()

    def seal(self, chunk_id: int) -> None:
        with self._cond:
            self._chunks[chunk_id].sealed = True
            self._advance()

    def _advance(self) -> None:
        while self._chunks:
            chunk_id, chunk = next(iter(self._chunks.items()))
            if not chunk.sealed or chunk.outstanding > 0:
                break
            del self._chunks[chunk_id]
            self._ready.update(chunk.offsets)  # later chunks carry later offsets
        self._cond.notify_all()

    def take_committable(self) -> dict[TopicPartition, int]:
        """Offsets that became safe since the last call (the caller commits them)."""
        with self._cond:
            ready, self._ready = self._ready, {}
            return ready

    def restore(self, offsets: dict[TopicPartition, int]) -> None:
        """Put back offsets whose commit failed, unless newer ones are ready already."""
        with self._cond:
            for tp, offset in offsets.items():
                if self._ready.get(tp, -1) < offset:
                    self._ready[tp] = offset

    @property
    def pending_chunks(self) -> int:
        with self._cond:
            return len(self._chunks)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every chunk is complete; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._chunks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop state for partitions given up: their uncommitted work is redone by the new owner."""
        gone = set(partitions)
        with self._cond:
            for chunk in self._chunks.values():
                for tp in gone & chunk.offsets.keys():
                    del chunk.offsets[tp]
            for tp in gone & self._ready.keys():
                del self._ready[tp]
