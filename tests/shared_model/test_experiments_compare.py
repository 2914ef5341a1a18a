"""The feature-set comparison renders every run's metrics.json into one table."""

import json

from shared_model.experiments.compare import main


def _run(folder, features, seed, ranker_ne, pop_ne=0.9, logreg_ne=0.8):
    folder.mkdir(parents=True)
    test = {
        name: {"ne": [ne, ne], "auc": [0.7, 0.6], "rows": 10, "ne_mean": ne}
        for name, ne in (
            ("ranker (no upstream)", ranker_ne),
            ("popularity", pop_ne),
            ("logreg", logreg_ne),
        )
    }
    metrics = {"features": features, "seed": seed, "rows": {"train": 100, "val": 10, "test": 10}}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "seconds": 1.0, "test": test}))
    return folder


def test_runs_grouped_by_features_with_paired_differences(tmp_path):
    runs = [
        _run(tmp_path / "a0", "basic", 0, 0.95),
        _run(tmp_path / "a1", "basic", 1, 0.93),
        _run(tmp_path / "b0", "trending", 0, 0.72),
        _run(tmp_path / "b1", "trending", 1, 0.72, logreg_ne=0.9),
    ]
    text = main([str(r) for r in runs] + ["--out", str(tmp_path / "out")])
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines()}
    # basic ranker: mean of 0.95, 0.93; +4.4% over popularity (0.9) on average
    assert "0.9400 ± 0.0141" in lines[("basic", "ranker (no upstream)")]
    assert "4.4 ± 1.6" in lines[("basic", "ranker (no upstream)")]
    # trending vs logreg per seed: 0.72/0.8 - 1 = -10%, 0.72/0.9 - 1 = -20%
    assert "-15.0 ± 7.1" in lines[("trending", "ranker (no upstream)")]
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [r["run"] for r in saved] == ["a0", "a1", "b0", "b1"]
    assert (tmp_path / "out" / "compare.md").read_text() == text


def test_experiment_tables_escape_a_pipe_inside_a_cell():
    from shared_model.experiments.render import table

    lines = table(["precision", "largest |Δp|"], [["bf16", "0.02"]]).splitlines()
    assert lines[0] == "| precision | largest \\|Δp\\| |"
    assert [line.replace("\\|", "").count("|") for line in lines] == [3, 3, 3]
