"""Collect docs/experiments/*.json into results.csv and a seed-spread plot of NE vs T.

python -m shared_model.experiments.report
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict

from shared_model.experiments.__main__ import DOCS

COLS = ["experiment", "dataset", "seed", "axis", "upstream", "L", "d", "T", "content", "flops"]
COLS += ["val_ne", "test_ne", "test_ne_ctr", "test_ne_cvr", "test_auc_ctr", "seconds"]
COLS += ["ne_up", "ne_down_stale", "ne_down_fresh", "tau_stale_%", "tau_fresh_%"]


def main() -> None:
    out = []
    for path in sorted(DOCS.glob("*.json")):
        raw = json.loads(path.read_text())
        exp = path.stem.split("_")[0]
        seed = raw["meta"]["train"]["seed"]
        for r in raw["rows"]:
            out.append({"experiment": exp, "dataset": raw["meta"]["dataset"], "seed": seed, **r})
    with open(DOCS / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLS, extrasaction="ignore")
        w.writeheader()
        w.writerows(out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq = [r for r in out if r["experiment"] == "seqlen"]
    for dataset in sorted({r["dataset"] for r in seq}):
        pts = defaultdict(list)
        for r in seq:
            if r["dataset"] == dataset:
                pts[(r["L"], r["T"])].append(r["test_ne"])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for L in sorted({k[0] for k in pts}):
            ts = sorted(t for (l_, t) in pts if l_ == L)
            ys = [pts[(L, t)] for t in ts]
            mean = [sum(y) / len(y) for y in ys]
            ax.plot(ts, mean, marker="o", label=f"L={L} (mean of {len(ys[0])} seeds)")
            for t, y in zip(ts, ys, strict=True):
                ax.plot([t] * len(y), y, "k.", alpha=0.4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("test NE (mean of heads)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(DOCS / f"seqlen_{dataset}_seeds.png", dpi=120)
        plt.close(fig)
    print(f"{len(out)} rows -> {DOCS / 'results.csv'}")


if __name__ == "__main__":
    main()
