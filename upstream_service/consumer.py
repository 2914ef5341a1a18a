"""Kafka I/O: the events consumer, record decoding and the dead-letter publisher.

The consumer is created with auto-commit off: the worker commits offsets itself, only after the
Redis writes they cover are durable (at-least-once, see offsets.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from shared_model.contract import ContractError, UserEvent
from upstream_service.settings import Settings

log = logging.getLogger(__name__)

# Dead-letter record headers (the value is the original bytes, the key the original key).
DLQ_REASON = "dlq.reason"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
DLQ_FAILED_AT_MS = "dlq.failed_at_ms"
DLQ_ORIGINAL_SIZE = "dlq.original_size"  # set when the value was truncated
# Larger values are dead-lettered truncated: a record as big as the broker accepts would not fit
# in the producer's request (1 MiB by default), and ``send`` would raise on the consumer thread.
DLQ_MAX_VALUE_BYTES = 512 * 1024


def build_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.max_poll_records,
    )


def build_producer(settings: Settings, **overrides: object) -> KafkaProducer:
    config = {
        **settings.kafka_client_config(),
        "acks": "all",
        "linger_ms": 5,
        # An idempotent producer cannot recover from a broker restart on some brokers (Tansu).
        "enable_idempotence": False,
        **overrides,
    }
    return KafkaProducer(**config)


@dataclass(frozen=True)
class InvalidRecord:
    record: ConsumerRecord
    reason: str


def decode_records(
    records: Iterable[ConsumerRecord],
) -> tuple[list[UserEvent], list[InvalidRecord]]:
    """Parse raw records into events; the ones that break the contract come back with why."""
    events: list[UserEvent] = []
    invalid: list[InvalidRecord] = []
    for record in records:
        if record.value is None:
            invalid.append(InvalidRecord(record, "empty record value (tombstone)"))
            continue
        try:
            event = UserEvent.decode(record.value)
        except ContractError as e:
            invalid.append(InvalidRecord(record, str(e)))
            continue
        if record.key is not None and record.key != event.kafka_key():
            # A wrong key scatters one user's events over partitions and breaks their order.
            invalid.append(InvalidRecord(record, "kafka key does not match the event's user_id"))
            continue
        events.append(event)
    return events, invalid


class DeadLetterPublisher:
    """Sends invalid records to the dead-letter topic; ``flush`` waits until all are acked."""

    def __init__(self, producer: KafkaProducer, topic: str, flush_timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.flush_timeout_s = flush_timeout_s
        self._futures: list = []

    def publish(self, invalid: InvalidRecord) -> None:
        r = invalid.record
        log.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, invalid.reason)
        headers = [
            (DLQ_REASON, invalid.reason.encode()),
            (DLQ_TOPIC, r.topic.encode()),
            (DLQ_PARTITION, str(r.partition).encode()),
            (DLQ_OFFSET, str(r.offset).encode()),
            (DLQ_FAILED_AT_MS, str(int(time.time() * 1000)).encode()),
        ]
        value = r.value or b""
        if len(value) > DLQ_MAX_VALUE_BYTES:
            headers.append((DLQ_ORIGINAL_SIZE, str(len(value)).encode()))
            value = value[:DLQ_MAX_VALUE_BYTES]
        future = self.producer.send(self.topic, key=r.key, value=value, headers=headers)
        self._futures.append(future)

    def flush(self) -> None:
        """Block until every published record is acknowledged (raises KafkaError otherwise)."""
        if not self._futures:
            return
        futures, self._futures = self._futures, []
        self.producer.flush(timeout=self.flush_timeout_s)
        for future in futures:
            future.get(timeout=self.flush_timeout_s)
