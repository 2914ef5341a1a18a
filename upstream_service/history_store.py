"""The per-user event history in Redis (layout in shared_model.contract, read by the ranker too).

One sorted set per (user, source): score = timestamp_ms, member = ``HistoryRecord.encode()``.
The encoding is deterministic, so a replayed event is a no-op ``ZADD`` and Kafka's at-least-once
delivery never duplicates history. Each source is capped separately with ``ZREMRANGEBYRANK``
(oldest first), as in the paper's views/conversions mix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from shared_model.contract import (
    SOURCE_ENGAGEMENT,
    SOURCE_IMPRESSION,
    ContractError,
    HistoryRecord,
    UserEvent,
    events_seen_key,
    history_key,
    merge_histories,
    source_of,
)
from upstream_service.redis_client import RedisClient, pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserHistory:
    """What the encoder reads for one user."""

    user_id: str
    records: list[HistoryRecord]  # oldest first, at most the requested length
    events_since_embedding: int  # the count-trigger counter as read (0 when disabled)


def _decode_all(members: Sequence[bytes]) -> list[HistoryRecord]:
    records = []
    for member in members:
        try:
            records.append(HistoryRecord.decode(member))
        except ContractError as e:
            # One unreadable member (a future contract version?) must not block the user.
            log.warning("skipping undecodable history record: %s", e)
    return records


class HistoryStore:
    """Pipelined appends and reads of user histories.

    Args:
        client: a redis-py client (bytes responses, i.e. ``decode_responses=False``).
        caps: maximum events kept per source (``contract.HISTORY_SOURCES``).
        ttl_s: expiry of a history key after its last append; 0 = never.
        count_events: maintain ``events_seen_key`` for the count-based refresh trigger.
    """

    def __init__(
        self,
        client: RedisClient,
        caps: dict[str, int],
        ttl_s: int = 0,
        count_events: bool = False,
    ) -> None:
        self.client = client
        self.caps = dict(caps)
        self.ttl_s = ttl_s
        self.count_events = count_events

    def append(self, events: Sequence[UserEvent]) -> tuple[list[bool], dict[str, int]]:
        """Append events in one pipelined round trip (MULTI/EXEC on one server; on a cluster one
        round trip per node, each user's commands on its slot).

        Returns:
            is_new: per event, False when the history already held it (a replay).
            seen: per user with new events, the count-trigger counter after this append
                (empty unless ``count_events``).
        """
        if not events:
            return [], {}
        pipe = pipeline(self.client, atomic=True)
        touched: set[str] = set()
        for event in events:
            key = history_key(event.user_id, source_of(event.action_type))
            pipe.zadd(key, {event.to_history_record().encode(): event.timestamp_ms})
            touched.add(key)
        for key in touched:
            cap = self.caps[key.rsplit(":", 1)[1]]
            pipe.zremrangebyrank(key, 0, -cap - 1)
            if self.ttl_s:
                pipe.expire(key, self.ttl_s)
        results = pipe.execute()
        is_new = [bool(added) for added in results[: len(events)]]
        if not self.count_events:
            return is_new, {}
        new_per_user: dict[str, int] = {}
        for event, new in zip(events, is_new, strict=True):
            if new:
                new_per_user[event.user_id] = new_per_user.get(event.user_id, 0) + 1
        if not new_per_user:
            return is_new, {}
        pipe = self.client.pipeline(transaction=False)
        for user_id, n in new_per_user.items():
            pipe.incrby(events_seen_key(user_id), n)
        counts = pipe.execute()
        return is_new, dict(zip(new_per_user, counts, strict=True))

    def load(self, user_ids: Sequence[str], length: int) -> list[UserHistory]:
        """The most recent ``length`` events of each user (both sources merged), one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zrange(history_key(user_id, SOURCE_ENGAGEMENT), -length, -1)
            pipe.zrange(history_key(user_id, SOURCE_IMPRESSION), -length, -1)
            if self.count_events:
                pipe.get(events_seen_key(user_id))
        results = pipe.execute()
        step = 3 if self.count_events else 2
        histories = []
        for i, user_id in enumerate(user_ids):
            eng, imp = results[i * step], results[i * step + 1]
            seen = int(results[i * step + 2] or 0) if self.count_events else 0
            records = merge_histories(_decode_all(eng), _decode_all(imp), limit=length)
            histories.append(UserHistory(user_id, records, seen))
        return histories

    def consume_seen(self, counts: dict[str, int]) -> None:
        """Subtract the counter values an encode covered (increments since then survive)."""
        if not self.count_events or not counts:
            return
        pipe = self.client.pipeline(transaction=False)
        for user_id, n in counts.items():
            if n:
                pipe.decrby(events_seen_key(user_id), n)
        pipe.execute()
