"""The event producer command publishes valid, keyed contract events."""

from __future__ import annotations

from kafka import KafkaConsumer

from shared_model.contract import UserEvent
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for
from upstream_service.produce import main


def _consume(bootstrap: str, topic: str, n: int) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    got: list = []

    def enough() -> bool:
        for batch in consumer.poll(timeout_ms=200).values():
            got.extend(batch)
        return len(got) >= n

    try:
        wait_for(enough, 30, f"{n} records on {topic}")
    finally:
        consumer.close()
    return got


def test_produce_from_generator_and_jsonl(kafka_broker, topic, tmp_path):
    assert main(["--brokers", kafka_broker.bootstrap, "--topic", topic, "--rate", "0",
                 "--count", "40", "--users", "5", "--no-progress"]) == 0  # fmt: skip
    records = _consume(kafka_broker.bootstrap, topic, 40)
    events = [UserEvent.decode(r.value) for r in records]
    assert all(r.key == e.kafka_key() for r, e in zip(records, events, strict=True))

    jsonl = tmp_path / "events.jsonl"
    mine = [make_event("jo", "conversion", BASE_MS + i) for i in range(3)]
    jsonl.write_text("\n".join(e.encode().decode() for e in mine) + "\n")
    other = f"{topic}-jsonl"
    kafka_broker.create_topic(other, partitions=1)
    assert main(["--brokers", kafka_broker.bootstrap, "--topic", other, "--jsonl", str(jsonl),
                 "--rate", "1000", "--no-progress"]) == 0  # fmt: skip
    assert [UserEvent.decode(r.value) for r in _consume(kafka_broker.bootstrap, other, 3)] == mine
