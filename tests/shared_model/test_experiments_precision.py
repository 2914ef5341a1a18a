"""The serving-precision check rebuilds a training run's test rows and scores them in float32
(reproducing the run's recorded NE), in bf16, with and without the weights cast at load, and
in int8."""

import json

import pytest

from shared_model import tiny_config
from shared_model.data.movielens_tiny import write_tiny_movielens
from shared_model.experiments.precision import MODES
from shared_model.experiments.precision import main as precision
from shared_model.training.__main__ import main as train

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    data = write_tiny_movielens(tmp / "ml", n_users=30, n_movies=80, ratings_per_user=30)
    for stage in ("upstream", "online"):
        cfg = tiny_config(stage, n_candidate_floats=10, content_dim=6, init_std=0.1)
        (tmp / f"{stage}.json").write_text(cfg.to_json())
    out = tmp / "run"
    train(
        ["--out", str(out), "--data-dir", str(data), "--seed", "3",
         "--world", json.dumps({"content": "genres", "negatives": 2}),
         "--upstream-config", str(tmp / "upstream.json"),
         "--online-config", str(tmp / "online.json"),
         "--train", json.dumps({"epochs": 1, "batch_size": 64, "evals_per_epoch": 1,
                                "progress": False}),
         "--device", "cpu", "--threads", "1"]
    )  # fmt: skip
    return out


def test_float32_reproduces_the_run_and_bf16_is_reported_beside_it(run, tmp_path):
    text = precision([str(run), "--out", str(tmp_path / "out"), "--threads", "1"])
    (check,) = json.loads((tmp_path / "out" / "precision.json").read_text())
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    assert check["seed"] == 3 and check["recorded"]["mode"] == "float32"
    assert list(check["results"]) == list(MODES)
    f32 = check["results"]["float32"]
    assert f32["ne_mean"] == pytest.approx(
        recorded["ranker (upstream embedding)"]["ne_mean"], abs=1e-9
    )
    assert f32["max_abs_prob_change"] == 0
    for name in list(MODES)[1:]:  # bf16 and int8
        r = check["results"][name]
        assert 0 < r["max_abs_prob_change"] < 5e-2  # really bf16 or int8, still close
        assert r["ne_mean"] == pytest.approx(f32["ne_mean"], abs=2e-2)
        assert f"| {name} |" in text
    assert (tmp_path / "out" / "precision.md").read_text() == text


def test_rows_that_differ_from_the_run_are_refused(run):
    with pytest.raises(SystemExit, match="rows"):
        precision([str(run), "--rows", "50,10,10", "--threads", "1"])
