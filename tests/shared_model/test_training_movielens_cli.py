"""The training CLI end to end on a generated MovieLens-format folder (``--data-dir``)."""

import json

import pytest

from shared_model import load_checkpoint, tiny_config
from shared_model.data.movielens_tiny import write_tiny_movielens
from shared_model.data.row_features import ROW_FLOATS
from shared_model.training.__main__ import main

pytest.importorskip("sklearn")

TRAIN = {"epochs": 1, "batch_size": 64, "lr": 5e-3, "evals_per_epoch": 2, "progress": False}
MODELS = ("upstream", "ranker (upstream embedding)", "ranker (no upstream)")
MODELS += ("base rate", "popularity", "logreg", "gbdt")


def test_training_cli_on_a_movielens_folder(tmp_path, capsys):
    data = write_tiny_movielens(tmp_path / "ml", n_users=30, n_movies=80, ratings_per_user=30)
    # widths that do not match the data (content 6 vs 6 genres is a match; floats 4 vs 2 not)
    # and id tables far smaller than the catalogue: the CLI fits them and says so
    up = tiny_config("upstream", n_candidate_floats=4, content_dim=3, ad_buckets=11)
    on = tiny_config("online", n_candidate_floats=4, content_dim=3, ad_buckets=11)
    (tmp_path / "up.json").write_text(up.to_json())
    (tmp_path / "on.json").write_text(on.to_json())
    out = tmp_path / "out"
    metrics = main(
        [
            "--out",
            str(out),
            "--data-dir",
            str(data),
            "--world",
            json.dumps({"content": "genres", "negatives": 2}),
            "--upstream-config",
            str(tmp_path / "up.json"),
            "--online-config",
            str(tmp_path / "on.json"),
            "--train",
            json.dumps(TRAIN),
            "--device",
            "cpu",
            "--bf16",
            "--threads",
            "1",
        ]
    )
    written = json.loads((out / "metrics.json").read_text())
    assert written["test"] == metrics["test"]
    assert list(written["test"]) == list(MODELS)
    rows = written["rows"]["test"]
    for r in written["test"].values():
        assert r["rows"] == rows and len(r["ne"]) == len(r["auc"]) == 2
        assert 0 < r["ne_mean"] < 2
    assert written["bf16"] and written["device"] == "cpu"
    # the curves: one entry per evaluation with the running train loss and the lr
    hist = written["online"]["history"]
    assert hist and all({"train_loss", "lr", "ne_mean", "epoch"} <= set(h) for h in hist)
    printed = capsys.readouterr().out
    assert all(f"| {m} |" in printed for m in MODELS)
    # the checkpoints carry the fitted configs: 6 genres, 2 + 8 floats (the default trending
    # features: year, genres, then the row's counts and rates), ad table >= 8 x 80 movies
    assert written["features"] == "trending"
    ckpt = load_checkpoint(out / "online", stage="online")
    assert ckpt.config.content_dim == 6 and ckpt.config.n_candidate_floats == 2 + len(ROW_FLOATS)
    assert ckpt.config.ad_buckets >= 8 * 80
    assert load_checkpoint(out / "upstream", stage="upstream").config.ad_buckets >= 8 * 80


def test_data_dir_needs_the_movielens_dataset(tmp_path):
    with pytest.raises(SystemExit, match="MovieLens-format"):
        main(["--out", str(tmp_path), "--data-dir", str(tmp_path), "--dataset", "synthetic"])
