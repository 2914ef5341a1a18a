"""The feature-path micro-benchmark end to end at a few repetitions: real redis-server; the
result JSON carries every Redis-read and decode variant and the headline lines (no figure is
asserted: this is no benchmark)."""

from __future__ import annotations

import random
from pathlib import Path

from loadtests.bench import features
from loadtests.bench.common import read_result
from ranker_service.features import history_events
from shared_model.config import online_config
from shared_model.contract import ActionType, HistoryRecord


def test_a_short_run_times_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "features.json"
    features.main(["--reps", "3", "--candidates", "10", "--per-source", "20", "--out", str(out)])
    doc = read_result(out)
    reads, readers, decodes, bodies, following = doc["tables"]
    assert len(reads["rows"]) == 5 and all(row[3] > 0 for row in reads["rows"])
    # The ranker's own read through both readers, back to back and after a sleep.
    assert [row[:2] for row in readers["rows"]] == [
        ["multiplexed (serving)", "nothing (back to back)"],
        ["redis.asyncio pipeline (reference)", "nothing (back to back)"],
        ["multiplexed (serving)", "a 5 ms sleep"],
        ["redis.asyncio pipeline (reference)", "a 5 ms sleep"],
    ]
    assert all(row[2] > 0 and row[4] > 0 for row in readers["rows"])
    assert any(
        line.startswith("the ranker's Redis read, event loop CPU: ") for line in doc["summary"]
    )
    paths = [row[0] for row in decodes["rows"]]
    assert paths == [
        "per-record reference",
        "previous serving code (newest first, early stop)",
        "serving, content cache cold",
        "serving, content cache warm",
        "serving, content cache warm, history by columns",
    ]
    assert all(row[1] > 0 for row in decodes["rows"])
    assert any(line.startswith("decode with the content cache warm: ") for line in doc["summary"])
    # The request body by the reference and the serving decoder, after nothing and a sleep.
    assert [row[:2] for row in bodies["rows"]] == [
        ["pydantic RankRequest (reference)", "nothing (back to back)"],
        ["msgspec (serving)", "nothing (back to back)"],
        ["pydantic RankRequest (reference)", "a 5 ms sleep"],
        ["msgspec (serving)", "a 5 ms sleep"],
    ]
    assert all(row[2] > 0 for row in bodies["rows"])
    assert any(line.startswith("request body decode (N = 10)") for line in doc["summary"])
    # The same decode after nothing, spinning, a sleep and a model step (a real recorded one).
    assert [row[0] for row in following["rows"]] == [
        "nothing (back to back)",
        "0.5 ms of spinning",
        "5 ms of spinning",
        "20 ms of spinning",
        "a 5 ms sleep",
        "one model step",
    ]
    assert all(row[1] > 0 for row in following["rows"])
    assert any(line.startswith("warm decode, thread CPU: ") for line in doc["summary"])


def test_no_model_skips_the_after_table(tmp_path: Path) -> None:
    out = tmp_path / "features.json"
    features.main(
        ["--reps", "2", "--candidates", "5", "--per-source", "10", "--no-model", "--out", str(out)]
    )
    doc = read_result(out)
    assert len(doc["tables"]) == 4
    assert not any(line.startswith("warm decode, thread CPU") for line in doc["summary"])


def test_spin_keeps_the_thread_busy_until_the_clock_passes_the_deadline() -> None:
    ticks = iter(range(100))
    reads: list[float] = []

    def clock() -> float:
        reads.append(next(ticks) * 0.001)  # 1 ms a read
        return reads[-1]

    features.spin(0.0045, clock)
    # The deadline is the first read + 4.5 ms: the loop reads until it sees 5 ms, then stops.
    assert reads == [0.0, 0.001, 0.002, 0.003, 0.004, 0.005]


def test_the_columns_history_equals_the_serving_history() -> None:
    """The 'history by columns' variant builds the same batch as the serving path."""
    cfg, rng = online_config(), random.Random(0)
    sources = [
        [
            HistoryRecord(
                1_750_000_000_000 + t, ActionType.CLICK, t, 1, rng.randrange(4), 1.0,
                tuple(rng.random() for _ in range(cfg.content_dim)),
            ).encode()
            for t in sorted(rng.sample(range(10**6), 30))
        ]
        for _ in range(2)
    ]  # fmt: skip
    a, kept_a, corrupt_a = features.columns_history(sources, 40, cfg.content_dim)
    b, kept_b, corrupt_b = history_events(sources, 40, cfg.content_dim)
    assert (kept_a, corrupt_a) == (kept_b, corrupt_b) == (40, 0)
    for name in ("timestamps_ms", "action_type", "item_hash", "surface_hash", "value", "valid"):
        assert getattr(a, name).equal(getattr(b, name)), name
    assert a.content.equal(b.content)
