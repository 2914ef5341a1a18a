"""The freshness benchmark end to end at a toy size: real broker, redis-server and worker."""

from __future__ import annotations

import uuid
from pathlib import Path

from loadtests.bench import freshness
from loadtests.bench.common import read_result


def test_a_short_run_writes_one_row_per_rate(tmp_path: Path, kafka_broker, redis_server) -> None:
    out = tmp_path / "freshness.json"
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    argv = ["--rates", "20,40", "--seconds", "1", "--pool", "5", "--history-length", "8",
            "--conversion-share", "0.5", "--kafka", kafka_broker.bootstrap, "--topic", topic,
            "--redis-url", redis_server.url, "--out", str(out)]  # fmt: skip
    assert freshness.main(argv) == 0
    result = read_result(out)
    assert result["benchmark"] == "freshness" and "--kafka" in result["command"]
    (table,) = result["tables"]
    assert [row[0] for row in table["rows"]] == [20.0, 40.0]
    for step in result["data"]["steps"]:
        assert step["sent"] == step["rate"] and step["caught_up"]
        assert (
            0 < step["conversions"] <= step["sent"] and 0 < step["encodes"] <= step["conversions"]
        )
        assert 0 < step["p50_s"] <= step["p99_s"] <= step["max_s"]
    assert result["data"]["history_length"] == 8
    assert [line.split(":")[0] for line in result["summary"]] == [
        "p99 at 20 events/s",
        "p99 at 40 events/s",
    ]
