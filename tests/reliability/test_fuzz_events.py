"""Malformed Kafka events: every one dead-lettered with a reason, the worker never crashes.

Two layers: a Hypothesis property over the decoding path (thousands of mutated events, in
process), and the real worker process fed a curated list of poison pills (including a 1 MiB
payload, a 5000-digit number and 100k-deep JSON) plus seeded random mutations, after which a
valid conversion must still be encoded.
"""

from __future__ import annotations

import json
import random
import signal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from shared_model.contract import ContractError, UserEvent
from tests.reliability.conftest import (
    UpstreamProcess,
    metric,
    newest_seen,
    read_dead_letters,
    send_events,
    upstream_env,
)
from upstream_service.consumer import DLQ_REASON, decode_records

BASE_MS = 1_750_000_000_000
VALID: dict[str, Any] = {
    "event_id": "e-1",
    "user_id": "fuzz-user",
    "timestamp_ms": BASE_MS,
    "action_type": "click",
    "item_id": "item-1",
    "surface": "feed",
    "value": 1.5,
    "content_embedding": [0.1, -0.2],
    "metadata": {"k": "v"},
}
FIELDS = list(VALID)

# JSON values of every type and size, including the ones that break naive decoders.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 65504.0, 65520.0, 3.5e38, -0.0]),
    st.text(max_size=300),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5),
    st.lists(st.integers(min_value=-(10**40), max_value=10**40), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _record(value: bytes | None, key: bytes | None = b"fuzz-user", offset: int = 0):
    return ConsumerRecord(
        topic="events",
        partition=0,
        leader_epoch=-1,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=-1 if key is None else len(key),
        serialized_value_size=-1 if value is None else len(value),
        serialized_header_size=-1,
    )


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    event = dict(VALID)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "retype", "add"]))
        field = draw(st.sampled_from(FIELDS))
        if op == "drop":
            event.pop(field, None)
        elif op == "retype":
            event[field] = draw(ODD_VALUES)
        else:
            event[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
    return json.dumps(event).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.one_of(mutated_events(), st.binary(max_size=200)))
def test_decoding_never_raises_and_valid_events_store(raw: bytes) -> None:
    """Whatever the bytes, decoding sorts them into events and reasons; never an exception."""
    events, invalid = decode_records([_record(raw)])
    assert len(events) + len(invalid) == 1
    for bad in invalid:
        assert bad.reason
    for event in events:
        # An accepted event must also be storable: the history append encodes it.
        event.to_history_record().encode()
        assert UserEvent.decode(event.encode()) == event


def poison_pills() -> list[tuple[str, bytes | None, bytes | None]]:
    """(case, key, value): each must be dead-lettered. Key ``fuzz-user`` unless stated."""

    def with_(**changes: Any) -> bytes:
        return json.dumps({**VALID, **changes}).encode()

    def without(field: str) -> bytes:
        return json.dumps({k: v for k, v in VALID.items() if k != field}).encode()

    k = b"fuzz-user"
    return [
        ("not-json", k, b"{this is not json"),
        ("bad-utf8", k, b'{"event_id": "\xff\xfe"}'),
        ("json-array", k, b"[1, 2, 3]"),
        ("json-null", k, b"null"),
        ("empty", k, b""),
        ("tombstone", k, None),
        ("deep-nesting", k, b"[" * 100_000 + b"]" * 100_000),
        ("5000-digit-int", k, with_().replace(b"1750000000000", b"1" * 5000)),
        ("missing-user", k, without("user_id")),
        ("missing-timestamp", k, without("timestamp_ms")),
        ("unknown-field", k, with_(price=3)),
        ("user-id-int", k, with_(user_id=7)),
        ("timestamp-string", k, with_(timestamp_ms=str(BASE_MS))),
        ("timestamp-float", k, with_(timestamp_ms=BASE_MS + 0.5)),
        ("timestamp-negative", k, with_(timestamp_ms=-1)),
        ("timestamp-zero", k, with_(timestamp_ms=0)),
        ("timestamp-year-3000", k, with_(timestamp_ms=32_503_680_000_000)),
        ("timestamp-10e30", k, with_(timestamp_ms=10**30)),
        ("timestamp-seconds", k, with_(timestamp_ms=1_750_000_000)),
        ("action-unknown-name", k, with_(action_type="teleport")),
        ("action-unknown-int", k, with_(action_type=99)),
        ("action-bool", k, with_(action_type=True)),
        ("value-nan", k, with_().replace(b'"value": 1.5', b'"value": NaN')),
        ("value-1e300", k, with_(value=1e300)),
        ("value-huge-int", k, with_(value=10**400)),
        ("content-over-float16", k, with_(content_embedding=[1e6])),
        ("content-huge-int", k, with_(content_embedding=[10**400])),
        ("content-too-wide", k, with_(content_embedding=[0.0] * 2000)),
        ("metadata-nested", k, with_(metadata={"a": {"b": 1}})),
        ("user-id-braces", k, with_(user_id="a{b}")),
        ("schema-version-2", k, with_(schema_version=2)),
        ("key-mismatch", b"someone-else", with_()),
        ("huge-metadata-1MiB", k, with_(metadata={"blob": "x" * (1024 * 1024)})),
        ("huge-garbage-1MiB", k, b"\x00" * (1024 * 1024 + 1)),
    ]


def random_mutations(n: int, seed: int) -> list[bytes]:
    """Seeded mutations of a valid event that each break the contract."""
    rng = random.Random(seed)
    odd = [None, True, -1, 10**40, 1e300, "", "x" * 300, [], {}, [1e9], "NaN", 3.5]
    out: list[bytes] = []
    while len(out) < n:
        event = dict(VALID)
        field = rng.choice(FIELDS)
        if rng.random() < 0.3:
            event.pop(field)
        else:
            event[field] = rng.choice(odd)
        raw = json.dumps(event).encode()
        try:
            UserEvent.decode(raw)
        except ContractError:
            out.append(raw)  # only the ones the contract rejects (some mutations are valid)
    return out


def test_worker_dead_letters_poison_pills_and_keeps_going(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for
) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    worker = UpstreamProcess(
        upstream_env(
            bootstrap=kafka_broker.bootstrap,
            redis_url=redis_server.url,
            topic=topic,
            checkpoint=checkpoints.upstream,
        ),
        name="upstream-fuzz",
    )
    pills = poison_pills()
    mutations = random_mutations(40, seed=8)
    producer = producer_for(kafka_broker.bootstrap, max_request_size=8 * 1024 * 1024)
    with worker:
        worker.wait_worker_ready()
        send_events(producer, topic, [(k, v) for _, k, v in pills])
        send_events(producer, topic, [(b"fuzz-user", raw) for raw in mutations])
        good = UserEvent("good-1", "fuzz-user", BASE_MS + 5, "conversion", "item-9")
        send_events(producer, topic, [good])
        worker.wait_until(
            lambda: newest_seen(redis_client, "fuzz-user") == BASE_MS + 5,
            timeout=60,
            what="the valid conversion after the poison pills to be encoded",
        )
        total = len(pills) + len(mutations)
        dead = read_dead_letters(kafka_broker.bootstrap, topic, total, timeout=60)
        assert len(dead) == total
        reasons = [dict(d.headers)[DLQ_REASON].decode() for d in dead]
        assert all(reasons), reasons
        by_case = dict(zip([case for case, _, _ in pills], reasons, strict=False))
        assert "not valid UTF-8 JSON" in by_case["not-json"]
        assert "teleport" in by_case["action-unknown-name"]
        assert "timestamp_ms" in by_case["timestamp-year-3000"]
        assert "too large" in by_case["huge-garbage-1MiB"]
        assert "user_id" in by_case["key-mismatch"]
        # Records under the size limit come back byte for byte; the oversized ones truncated.
        for (case, _, value), d in zip(pills, dead, strict=False):
            if len(value or b"") < 512 * 1024:
                assert d.value == (value or b""), case
            else:
                assert 0 < len(d.value) < len(value), case
        text = worker.metrics()
        assert metric(text, "upstream_events_invalid_total") == total
        assert metric(text, "upstream_embeddings_written_total") == 1
        assert worker.running and worker.is_ready()
        assert worker.stop(timeout=30) == 0, worker.log_tail()
    assert worker.returncode == 0 or worker.returncode == -signal.SIGTERM
