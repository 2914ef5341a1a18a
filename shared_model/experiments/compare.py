"""Compare training-CLI runs (``OUT/metrics.json``) by feature set: one table, mean ± std.

    python -m shared_model.experiments.compare runs/trending/*-s* --out docs/experiments/trending

Each run is one ``python -m shared_model.training`` output folder; runs are grouped by their
``features`` and averaged over seeds. Beside each model's test NE the table gives its NE
relative to popularity and to the logistic regression of the same run (paired by seed:
those baselines share the run's test rows). Writes ``OUT/compare.md`` and ``OUT/compare.json``
(every run's test metrics, so the table can be rebuilt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared_model.experiments.render import fmt, stats, table, write_report

MODELS = ("ranker (upstream embedding)", "ranker (no upstream)", "upstream")
BASELINES = ("base rate", "popularity", "logreg", "gbdt")


def load(folders: list[Path]) -> list[dict]:
    runs = []
    for folder in folders:
        m = json.loads((folder / "metrics.json").read_text())
        runs.append(
            {
                "run": folder.name,
                "features": m.get("features") or "basic",
                "seed": m.get("seed"),
                "rows": m["rows"],
                "seconds": m["seconds"],
                "test": m["test"],
            }
        )
    return runs


def rows(runs: list[dict]) -> list[list[str]]:
    out = []
    for features in sorted({r["features"] for r in runs}):
        group = [r for r in runs if r["features"] == features]
        names = [n for n in MODELS + BASELINES if n in group[0]["test"]]
        for name in names:
            ne = [r["test"][name]["ne_mean"] for r in group]
            rel = {
                ref: [
                    100 * (r["test"][name]["ne_mean"] / r["test"][ref]["ne_mean"] - 1)
                    for r in group
                ]
                for ref in ("popularity", "logreg")
            }
            auc = [r["test"][name]["auc"][0] for r in group]
            out.append(
                [
                    features,
                    name,
                    fmt(stats(ne)),
                    fmt(stats(rel["popularity"]), 1),
                    fmt(stats(rel["logreg"]), 1),
                    fmt(stats(auc), 3),
                ]
            )
    return out


def render(runs: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    sizes = sorted({tuple(r["rows"].values()) for r in runs})
    header = ["features", "model", "test NE", "vs popularity %", "vs logreg %", "AUC CTR"]
    return (
        f"{len(runs)} runs, seeds {seeds}, rows train/val/test {sizes}; mean ± std over "
        "seeds; 'vs' columns: the model's NE over the baseline's of the same run, in %.\n\n"
        + table(header, rows(runs))
        + "\n"
    )


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m shared_model.experiments.compare")
    p.add_argument("runs", nargs="+", type=Path, help="training CLI output folders")
    p.add_argument("--out", type=Path, default=None, help="folder for compare.{md,json}")
    args = p.parse_args(argv)
    runs = load(args.runs)
    text = render(runs)
    write_report(args.out, "compare", text, runs)
    return text


if __name__ == "__main__":
    main()
