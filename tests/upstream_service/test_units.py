"""Pure components of the worker: batcher, offset tracker, settings, encoder, history store."""

from __future__ import annotations

import threading

import pytest
import torch
from kafka.structs import TopicPartition

from shared_model.checkpoint import build_model
from shared_model.config import tiny_config
from shared_model.contract import (
    SOURCE_ENGAGEMENT,
    SOURCE_IMPRESSION,
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    history_key,
)
from tests.upstream_service.conftest import BASE_MS, make_event
from upstream_service.batcher import RefreshBatcher
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.encoder import UserEncoder
from upstream_service.history_store import HistoryStore
from upstream_service.offsets import OffsetTracker
from upstream_service.settings import Settings

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_batcher_coalesces_pending_users_and_reopens_in_flight_ones():
    b = RefreshBatcher(max_size=10, max_wait_s=60)
    assert b.submit("u", 1, chunk=0) == (False, True)
    assert b.submit("u", 2, chunk=0) == (True, False)  # same chunk already waits on it
    assert b.submit("u", 3, chunk=1) == (True, True)
    b.set_flushing(True)
    (request,) = b.next_batch(timeout=1)
    assert request.trigger_times_ms == [1, 2, 3] and request.chunks == {0, 1}
    # u is in flight now: a new trigger opens a new request.
    assert b.submit("u", 4, chunk=2) == (False, True)


def test_batcher_hands_out_full_batches_without_waiting():
    b = RefreshBatcher(max_size=3, max_wait_s=3600, adaptive=False)  # the fixed-wait mode
    for i in range(7):
        b.submit(f"u{i}", i)
    assert [r.user_id for r in b.next_batch(timeout=5)] == ["u0", "u1", "u2"]
    assert [r.user_id for r in b.next_batch(timeout=5)] == ["u3", "u4", "u5"]
    assert b.next_batch(timeout=0.01) == []  # one user left, waiting for company
    b.close()
    assert [r.user_id for r in b.next_batch(timeout=5)] == ["u6"]
    assert b.next_batch() == []


def test_batcher_releases_a_partial_batch_after_max_wait():
    b = RefreshBatcher(max_size=100, max_wait_s=0.05)
    b.submit("u", 1)
    out: list = []
    t = threading.Thread(target=lambda: out.extend(b.next_batch(timeout=30)))
    t.start()
    t.join(30)
    assert [r.user_id for r in out] == ["u"]


def test_offsets_advance_only_over_the_completed_prefix():
    t = OffsetTracker()
    c0 = t.open({TP0: 10})
    t.add_dependency(c0)
    t.seal(c0)
    c1 = t.open({TP0: 20, TP1: 5})
    t.seal(c1)  # no refresh needed, but c0 still waits
    assert t.take_committable() == {}
    t.resolve([c0])
    assert t.take_committable() == {TP0: 20, TP1: 5}
    assert t.pending_chunks == 0 and t.wait_idle(0)


def test_offsets_forget_revoked_partitions():
    t = OffsetTracker()
    c0 = t.open({TP0: 3, TP1: 4})
    t.seal(c0)
    t.forget([TP1])
    assert t.take_committable() == {TP0: 3}


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("UPSTREAM_TRIGGER_ACTIONS", '["conversion", "CLICK"]')
    monkeypatch.setenv("UPSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("UPSTREAM_EMBEDDING_DTYPE", "float32")
    s = Settings()
    assert s.trigger_action_types == {ActionType.CONVERSION, ActionType.CLICK}
    assert s.embedding_dtype == "float32"
    assert "s3cret" not in repr(s)
    assert s.kafka_client_config() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "upstream-worker",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }
    monkeypatch.setenv("UPSTREAM_TRIGGER_ACTIONS", '["teleport"]')
    with pytest.raises(ValueError, match="teleport"):
        Settings()


@pytest.fixture(scope="module")
def encoder() -> UserEncoder:
    torch.manual_seed(0)
    cfg = tiny_config("upstream")
    return UserEncoder(build_model(cfg), cfg, "test-v1", dtype=EmbeddingDType.FLOAT32)


def _history(user: str, n: int) -> list:
    actions = ["view", "click", "conversion", "impression"]
    return [
        make_event(user, actions[i % 4], BASE_MS + 1000 * i, item_id=f"it-{i}").to_history_record()
        for i in range(n)
    ]


def test_encoder_batch_matches_one_by_one_and_stamps_metadata(encoder):
    users = ["a", "b", "c"]
    histories = [_history("a", 3), _history("b", 40), _history("c", 1)]
    batch = encoder.encode(users, histories, now_ms=BASE_MS + 99)
    for user, history, out in zip(users, histories, batch, strict=True):
        (single,) = encoder.encode([user], [history], now_ms=BASE_MS + 99)
        torch.testing.assert_close(
            torch.tensor(out.record.vector), torch.tensor(single.record.vector), atol=1e-5, rtol=0
        )
        assert out.record.newest_event_ms == history[-1].timestamp_ms
        assert out.record.history_length == min(len(history), encoder.history_length)
        assert out.record.model_version == "test-v1"
        assert len(out.record.vector) == encoder.dim
        assert EmbeddingRecord.decode(out.record.encode()) == out.record


def test_encoder_is_a_function_of_the_history_alone(encoder):
    history = _history("a", 10)
    (first,) = encoder.encode(["a"], [history], now_ms=BASE_MS)
    (again,) = encoder.encode(["a"], [history], now_ms=BASE_MS + 10**6)
    assert first.record.vector == again.record.vector


def test_history_caps_each_source_and_dedups(redis_client):
    store = HistoryStore(redis_client, {"eng": 3, "imp": 5}, count_events=True)
    events = [make_event("u", "view", BASE_MS + i) for i in range(8)]
    events += [make_event("u", "conversion", BASE_MS + 100 + i) for i in range(4)]
    is_new, seen = store.append(events)
    assert all(is_new) and seen == {"u": 12}
    is_new, seen = store.append(events[-2:])
    assert is_new == [False, False] and seen == {}
    assert redis_client.zcard(history_key("u", SOURCE_IMPRESSION)) == 5
    assert redis_client.zcard(history_key("u", SOURCE_ENGAGEMENT)) == 3
    (loaded,) = store.load(["u"], length=6)
    # Views kept: +3..+7 (cap 5); conversions kept: +101..+103 (cap 3); newest 6 overall.
    expected = [5, 6, 7, 101, 102, 103]
    assert [r.timestamp_ms - BASE_MS for r in loaded.records] == expected
    assert loaded.events_since_embedding == 12
    store.consume_seen({"u": 12})
    assert store.load(["u"], 1)[0].events_since_embedding == 0


def test_embedding_store_keeps_the_newest(redis_client):
    store = EmbeddingStore(redis_client, ttl_s=60)
    old = EmbeddingRecord((0.5,) * 4, "v1", BASE_MS, BASE_MS + 10, 3)
    new = EmbeddingRecord((0.25,) * 4, "v1", BASE_MS, BASE_MS + 20, 4)
    assert store.write([("u", new)]) == [True]
    assert store.write([("u", old)]) == [False]
    assert store.read("u", "v1") == new
    recomputed = EmbeddingRecord((1.0,) * 4, "v1", BASE_MS + 5, BASE_MS + 20, 4)
    assert store.write([("u", recomputed)]) == [True]  # equal timestamps overwrite
    assert store.read("u", "v1") == recomputed
    # Another model version lives beside it (contract v2), under its own rule.
    other = EmbeddingRecord((2.0,) * 4, "v2", BASE_MS, BASE_MS + 1, 4)
    assert store.write([("u", other)]) == [True]
    assert store.read("u", "v1") == recomputed and store.read("u", "v2") == other
