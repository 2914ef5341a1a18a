"""The scoring benchmark's tables on a tiny model: the precision tables, every variant timed
and compared with float32, and the step against its floor, its matrix products read from the
profiler (no timing is asserted: this is no benchmark)."""

from __future__ import annotations

import pytest
import torch

from loadtests.bench.common import Result
from loadtests.bench.scoring import (
    RECORDED_F32,
    RECORDED_INT8,
    _request,
    bf16_table,
    first_replay_table,
    floor_gap_table,
    int8_table,
    matrix_products,
    product_flops,
    replay_products,
)
from shared_model.config import tiny_config
from shared_model.ranker import RankerModel
from shared_model.traced import TracedScorer


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


def test_matrix_products_are_read_in_order_with_their_operands_shapes() -> None:
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    x, w, bias = torch.randn(2, 6), torch.randn(7, 6), torch.randn(7)
    p, q = torch.randn(8, 2, 3), torch.randn(8, 3, 9)

    def step() -> None:
        torch.mm(a, b)
        torch.nn.functional.linear(x, w, bias)  # addmm: bias, x, w.T
        torch.bmm(p, q)
        (a + 1).sum()  # not a product

    products = matrix_products(step)
    assert products == [
        ("aten::mm", ((3, 4), (4, 5))),
        ("aten::addmm", ((2, 6), (6, 7))),
        ("aten::bmm", ((8, 2, 3), (8, 3, 9))),
    ]
    assert product_flops(products) == 2 * (3 * 4 * 5 + 2 * 6 * 7 + 8 * 2 * 3 * 9)
    replay_products(products)()  # the same shapes multiply


def test_the_floor_gap_table_reads_the_recorded_graphs_products(setup) -> None:
    model, requests = setup
    traced = TracedScorer(model)
    traced.score(*requests[0])  # recording runs the eager step too: record before reading
    products = matrix_products(lambda: traced.score(*requests[0]))
    assert matrix_products(lambda: traced.score(*requests[0])) == products  # every call's
    assert products and {op for op, _ in products} <= {"aten::mm", "aten::addmm", "aten::bmm"}
    result = Result("scoring-test", "t", "python -m loadtests.bench.scoring")
    line = floor_gap_table(result, traced, requests[0], rounds=1)
    (table,) = result.tables
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == [
        "floor",
        "matrix products alone",
        "fixed cost (N = 1, T = 1)",
        "the whole step",
    ]
    assert rows["floor"][3] == 1.0 and rows["the whole step"][4] == 1.0
    assert rows["matrix products alone"][1] == pytest.approx(product_flops(products) / 1e9)
    # the fixed cost is the graph of one candidate and a one-event history, recorded here
    assert traced.graphs == 2
    assert all(row[2] > 0 for row in table.rows)
    assert line.startswith("the recorded step against its floor: ")


def test_the_first_replay_table_records_afresh_in_both_scorers(setup, monkeypatch) -> None:
    model, requests = setup
    made = []

    class Counting(TracedScorer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("shared_model.traced.TracedScorer", Counting)
    result = Result("scoring-test", "t", "python -m loadtests.bench.scoring")
    line = first_replay_table(result, model, requests[:2], rounds=2)
    (table,) = result.tables
    assert table.title == "A newly recorded graph's first replays: 2 users (threads 1)"
    assert [row[0] for row in table.rows] == [
        "recording",
        "first replay",
        "second replay",
        "third replay",
    ]
    assert all(row[1] > 0 and row[2] > 0 for row in table.rows)
    # two rounds, each a fresh scorer of either kind, each holding the one graph it recorded
    assert [s.ready for s in made] == [True, False, True, False]
    assert all(s.graphs == 1 for s in made)
    assert line.startswith("a new graph's first replay (2 users): ")
