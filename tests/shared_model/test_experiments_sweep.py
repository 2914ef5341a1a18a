import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from shared_model.data.movielens_tiny import write_tiny_movielens
from shared_model.experiments import sweep
from shared_model.experiments.render import render, stats

TINY = {"d_model": 16, "d_ffn": 32, "head_dim": 8, "n_heads": 2}


def test_sweep_end_to_end_on_a_movielens_folder(tmp_path):
    data = write_tiny_movielens(tmp_path / "ml", n_users=20, n_movies=60, ratings_per_user=20)
    out = tmp_path / "sweep"
    argv = ["--out", str(out), "--data-dir", str(data), "--seeds", "0,1", "--threads", "1"]
    argv += ["--device", "cpu", "--lengths", "4,8", "--depths", "1,2"]
    argv += ["--base", json.dumps(TINY), "--train", '{"batch_size": 256}']
    sweep.main(argv)
    runs = [(out / "runs" / f"seed{s}.jsonl").read_text().splitlines() for s in (0, 1)]
    for lines in runs:
        parts = [json.loads(x)["part"] for x in lines]
        assert parts[0] == "meta" and parts[-1] == "done"
        assert parts.count("baseline") == 4
        # grid 2 x 2, content off at 2 depths, the L=3 iso-FLOPs upstream
        assert parts.count("upstream") == 7
        # deep stale, none, 3 transfer stale (one shared with deep? no: L=2 vs L=1), 2 fresh
        assert parts.count("ranker") == 7
    res = json.loads((out / "sweep.json").read_text())
    assert res["headline"]["popularity"]["test_ne"]["n"] == 2
    assert res["headline"]["ranker, no upstream"]["test_ne"]["n"] == 2
    assert set(res["seqlen"]) == {"1", "2"} and set(res["seqlen"]["1"]) == {"4", "8"}
    assert len(res["targets"]) == 4
    for name in ("seqlen.png", "curves.png", "sweep.md"):
        assert (out / name).stat().st_size > 0
    md = (out / "sweep.md").read_text()
    assert "| popularity |" in md and "Reproduce: `python -m shared_model.experiments.sweep" in md
    # re-rendering from the run files gives the same report
    sweep.main(["--out", str(out), "--render-only"])
    assert (out / "sweep.md").read_text() == md


@pytest.mark.parametrize("flag", [[], ["--bf16"]])
def test_the_bf16_flag_reaches_every_seeds_training_config(tmp_path, flag):
    # The end-to-end sweep above trains in float32: bf16 training on a CPU without native bf16
    # takes minutes, and training in bf16 is tested on its own (test_training_movielens_cli).
    data = write_tiny_movielens(tmp_path / "ml", n_users=20, n_movies=60, ratings_per_user=20)
    out = tmp_path / "sweep"
    args = sweep.parse(["--out", str(out), "--data-dir", str(data), "--device", "cpu", *flag])
    sweep.SeedRun(args, 0).file.close()
    meta = json.loads((out / "runs" / "seed0.jsonl").read_text().splitlines()[0])
    assert meta["part"] == "meta" and meta["train"]["bf16"] is bool(flag)


def _write_runs(folder, ranker_up, ranker_none, pop, logreg, ne_short, ne_long):
    (folder / "runs").mkdir(parents=True)
    for s in range(3):
        base = {"seed": s, "elapsed_s": 1.0}
        metrics = lambda ne: {  # noqa: E731
            "test_ne": ne,
            "test_ne_ctr": ne,
            "test_ne_cvr": ne,
            "test_auc_ctr": 0.7,
            "test_auc_cvr": 0.7,
        }
        rows = [
            {"part": "meta", "command": "c", "dataset": "d", "rows": [1, 1, 1], "train": {}}
            | {"base": {}, "device": "cpu", "machine": {}, "depths": [1, 2], "lengths": [16, 256]}
            | {"t_iso": 8},
            {"part": "baseline", "model": "popularity", **metrics(pop[s])},
            {"part": "baseline", "model": "logreg", **metrics(logreg[s])},
            {"part": "baseline", "model": "gbdt", **metrics(1.0)},
            {"part": "baseline", "model": "base rate", **metrics(1.0)},
        ]
        for L in (1, 2):
            for T, ne in ((16, ne_short[s]), (256, ne_long[s])):
                rows.append(
                    {"part": "upstream", "L": L, "T": T, "d": 32, "content": True}
                    | {"flops": T * L * 1000, "history": [], "seconds": 1, **metrics(ne)}
                )
        for up, mode, ne in (
            ("L=2 T=256", "stale", ranker_up[s]),
            ("none", "none", ranker_none[s]),
        ):
            rows.append(
                {"part": "ranker", "upstream": up, "mode": mode, "history": [], "seconds": 1}
                | metrics(ne)
            )
        rows.append({"part": "done", "over_budget": False})
        path = folder / "runs" / f"seed{s}.jsonl"
        path.write_text("".join(json.dumps(base | r) + "\n" for r in rows))


def test_targets_are_judged_per_seed(tmp_path):
    _write_runs(
        tmp_path / "met",
        ranker_up=[0.70, 0.71, 0.72],
        ranker_none=[0.80, 0.81, 0.82],
        pop=[0.90, 0.91, 0.92],
        logreg=[0.75, 0.76, 0.77],
        ne_short=[0.95, 0.96, 0.97],
        ne_long=[0.90, 0.91, 0.92],
    )
    assert [t["met"] for t in render(tmp_path / "met")["targets"]] == [True] * 4
    # the same means with a seed spread larger than the effects: the targets on means still
    # hold (11% below popularity on average; 0.05 below logreg), those on the spread do not
    _write_runs(
        tmp_path / "noisy",
        ranker_up=[0.88, 0.71, 0.54],
        ranker_none=[0.70, 0.81, 0.92],
        pop=[0.91, 0.91, 0.91],
        logreg=[0.60, 0.76, 0.92],
        ne_short=[0.85, 0.96, 1.07],
        ne_long=[1.00, 0.91, 0.82],
    )
    met = [t["met"] for t in render(tmp_path / "noisy")["targets"]]
    assert met == [True, True, False, False]


def test_stats_uses_the_sample_std():
    s = stats([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "n": 3}
    assert stats([])["n"] == 0 and stats([5.0])["std"] == 0.0


def test_experiments_cli_prints_the_baselines_under_its_tables(tmp_path, monkeypatch):
    import shared_model.experiments.__main__ as experiments

    data = write_tiny_movielens(tmp_path / "ml", n_users=20, n_movies=60, ratings_per_user=20)
    monkeypatch.setattr(experiments, "DOCS", tmp_path / "docs")
    argv = ["baselines", "--data-dir", str(data), "--content", "genres", "--device", "cpu"]
    experiments.main([*argv, "--threads", "1", "--tag", "_tiny"])
    md = (tmp_path / "docs" / "baselines_movielens_tiny.md").read_text()
    assert all(f"| {m} |" in md for m in ("base rate", "popularity", "logreg", "gbdt"))
    raw = json.loads((tmp_path / "docs" / "baselines_movielens_tiny.json").read_text())
    assert raw["meta"]["data_dir"] == str(data) and len(raw["baselines"]) == 4


def test_recipe_reports_the_validation_curve_and_the_table_sizes(tmp_path):
    from shared_model.experiments import recipe

    data = write_tiny_movielens(tmp_path / "ml", n_users=20, n_movies=60, ratings_per_user=20)
    argv = ["--data-dir", str(data), "--rows", "", "--train", '{"batch_size": 256}']
    sized = recipe.main(argv)
    demo = recipe.main([*argv, "--demo-tables", "--out", str(tmp_path / "r.json")])
    assert sized["tables"]["ad_buckets"] >= 8 * 60 and demo["tables"]["ad_buckets"] == 2003
    saved = json.loads((tmp_path / "r.json").read_text())
    assert 1 <= len(saved["history"]) <= 8 and saved["test"]["rows"] == saved["rows"][2]
