"""OffsetTracker alone: which offsets become committable, and when.

The worker commits exactly what ``take_committable`` returns, so every off-by-one here is an
offset committed before its embedding write (a lost refresh after a crash) or never committed.
"""

from __future__ import annotations

import threading

from kafka.structs import TopicPartition

from upstream_service.offsets import OffsetTracker

TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


def test_chunk_ids_stay_distinct():
    t = OffsetTracker()
    ids = [t.open({TP0: 10 * (i + 1)}) for i in range(4)]
    assert len(set(ids)) == 4
    for chunk in ids[1:]:
        t.seal(chunk)
    assert t.take_committable() == {}  # the first one is still open
    t.seal(ids[0])
    assert t.take_committable() == {TP0: 40}


def test_a_chunk_waits_for_every_refresh_it_depends_on():
    t = OffsetTracker()
    c = t.open({TP0: 7})
    t.add_dependency(c)
    t.add_dependency(c)
    t.seal(c)
    t.resolve([c])
    assert t.take_committable() == {}  # one refresh still unwritten
    assert t.pending_chunks == 1
    t.resolve([c])
    assert t.take_committable() == {TP0: 7}
    assert t.pending_chunks == 0


def test_an_unsealed_chunk_holds_back_even_with_no_refresh():
    t = OffsetTracker()
    c = t.open({TP0: 3})
    t.resolve([])
    assert t.take_committable() == {}
    t.seal(c)
    assert t.take_committable() == {TP0: 3}
    assert t.take_committable() == {}  # handed out once


def test_resolving_an_unknown_chunk_is_ignored():
    t = OffsetTracker()
    c = t.open({TP0: 1})
    t.add_dependency(c)
    t.seal(c)
    t.resolve([c + 100])
    assert t.take_committable() == {}


def test_forget_a_partition_some_pending_chunks_do_not_hold():
    t = OffsetTracker()
    c0 = t.open({TP0: 3})
    c1 = t.open({TP0: 5, TP1: 9})
    t.forget([TP1])  # while both chunks are still open
    t.seal(c0)
    t.seal(c1)
    assert t.take_committable() == {TP0: 5}


def test_restore_keeps_newer_ready_offsets_and_puts_back_the_rest():
    t = OffsetTracker()
    c = t.open({TP0: 10})
    t.seal(c)
    taken = t.take_committable()
    c = t.open({TP0: 12})
    t.seal(c)  # newer offset ready while the commit of 10 failed
    t.restore(taken)
    t.restore({TP1: 0})  # no ready offset for TP1: put back as given, even 0
    assert t.take_committable() == {TP0: 12, TP1: 0}
    t.restore({TP0: 4})
    assert t.take_committable() == {TP0: 4}


def test_wait_idle_gives_up_when_work_stays_pending():
    t = OffsetTracker()
    c = t.open({TP0: 1})
    t.add_dependency(c)
    t.seal(c)
    assert t.wait_idle(0.05) is False
    assert t.pending_chunks == 1


def test_wait_idle_returns_when_another_thread_completes_the_work():
    t = OffsetTracker()
    c = t.open({TP0: 1})
    t.add_dependency(c)
    t.seal(c)
    done = threading.Thread(target=t.resolve, args=([c],))
    # Holding the tracker's (reentrant) lock, the resolver can only run once wait_idle waits.
    with t._cond:
        done.start()
        assert t.wait_idle(1.0) is True
    done.join()
    assert t.take_committable() == {TP0: 1}
