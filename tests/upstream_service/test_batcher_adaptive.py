"""The adaptive batcher: a backlog goes out at once (up to max_size), an idle arrival waits."""

from __future__ import annotations

import threading

from upstream_service.batcher import RefreshBatcher

HOUR = 3600.0


def test_backlog_is_dispatched_without_waiting_up_to_max_size() -> None:
    b = RefreshBatcher(max_size=3, max_wait_s=HOUR, adaptive=True)
    for i in range(5):
        b.submit(f"u{i}", 1000 + i, chunk=i)
    b.submit("u1", 2000, chunk=9)  # coalesced into u1's pending request
    # Both users were queued before the call: no hour-long wait, arrival order kept.
    first = b.next_batch(timeout=30)
    assert [r.user_id for r in first] == ["u0", "u1", "u2"]
    assert first[1].trigger_times_ms == [1001, 2000] and first[1].chunks == {1, 9}
    assert [r.user_id for r in b.next_batch(timeout=30)] == ["u3", "u4"]
    assert b.next_batch(timeout=0.01) == []  # nothing queued: nothing to hand out


def test_a_user_queued_after_a_take_opens_a_fresh_request() -> None:
    b = RefreshBatcher(max_size=10, max_wait_s=HOUR, adaptive=True)
    b.submit("u0", 1)
    (taken,) = b.next_batch(timeout=30)
    coalesced, _ = b.submit("u0", 2)  # u0 is in flight: a new request, not a join
    assert not coalesced and taken.trigger_times_ms == [1]
    assert [r.trigger_times_ms for r in b.next_batch(timeout=30)] == [[2]]


def test_an_arrival_while_idle_waits_for_company() -> None:
    b = RefreshBatcher(max_size=2, max_wait_s=HOUR, adaptive=True)
    out: list = []
    started = threading.Event()

    def take() -> None:
        started.set()
        out.extend(b.next_batch(timeout=30))

    t = threading.Thread(target=take, daemon=True)
    t.start()
    started.wait(5)
    b.submit("late", 1)  # may land before or after the call; either way it is handed out
    b.submit("company", 2)  # the batch is full now
    t.join(10)
    assert not t.is_alive()
    assert [r.user_id for r in out] in (["late", "company"], ["late"])


def test_fixed_wait_without_adaptive_still_waits_for_company() -> None:
    b = RefreshBatcher(max_size=3, max_wait_s=HOUR, adaptive=False)
    b.submit("u0", 1)
    assert b.next_batch(timeout=0.01) == []
