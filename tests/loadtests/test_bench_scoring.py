"""The scoring benchmark's precision tables on a tiny model: every variant timed and compared
with float32 (no figure is asserted: this is no benchmark)."""

from __future__ import annotations

import pytest
import torch

from loadtests.bench.common import Result
from loadtests.bench.scoring import RECORDED_F32, RECORDED_INT8, _request, bf16_table, int8_table
from shared_model.config import tiny_config
from shared_model.ranker import RankerModel


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny_config("online")
    requests = [_request(cfg, 5, cfg.max_seq_len) for _ in range(3)]
    return RankerModel(cfg).eval(), requests


def test_the_int8_table_times_float32_and_both_int8_scopes(setup) -> None:
    model, requests = setup
    result = Result("scoring-test", "t", "python -m loadtests.bench.scoring")
    line = int8_table(result, model, requests, threads=1, rounds=1)
    (table,) = result.tables
    assert table.title == "int8 on this CPU: one request and 3 together (threads 1)"
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == [
        "int8, eager",
        RECORDED_F32,
        RECORDED_INT8,
        "int8 with DHEN and heads, recorded graph",
    ]
    assert rows[RECORDED_F32][2] == 1.0  # float32 against itself
    assert rows[RECORDED_F32][5] < 1e-5 and 0 < rows[RECORDED_INT8][5] < 0.05  # max |Δp|
    assert all(row[1] > 0 and row[4] > 0 for row in table.rows)
    assert line.startswith("int8 recorded graph: ") and "score_many(3)" in line


def test_the_bf16_table_times_autocast_cast_weights_and_the_bf16_graph(setup) -> None:
    model, requests = setup
    result = Result("scoring-test", "t", "python -m loadtests.bench.scoring")
    line = bf16_table(result, model, requests, threads=1, rounds=1)
    (table,) = result.tables
    assert [row[0] for row in table.rows] == [
        "float32",
        "bf16 autocast, float32 weights",
        "bf16, weights cast at load",
        RECORDED_F32,
        "bf16, recorded graph",
    ]
    assert line.startswith("bf16 weights cast at load: ")
