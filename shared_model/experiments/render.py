"""Render a sweep folder (``runs/seed*.jsonl``) into sweep.md, sweep.json and PNGs.

Every figure is mean ± sample std over the seeds that finished that point (n is printed);
the targets are checked per seed where they compare two models (paired differences).

    python -m shared_model.experiments.sweep --out DIR --render-only
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from shared_model.experiments.plots import plot_curves, plot_errorbars

log = logging.getLogger(__name__)

SIMPLE = ("logreg", "gbdt")


def load_runs(folder: Path) -> list[dict]:
    rows = []
    for path in sorted((folder / "runs").glob("seed*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
    }


def fmt(s: dict, digits: int = 4) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" + (
        f" (n={s['n']})" if s["n"] < 3 else ""
    )


def write_report(out: Path | None, stem: str, text: str, data: object) -> None:
    """Print a report and, with ``out``, keep it as ``out/<stem>.md`` beside its data as
    ``out/<stem>.json``."""
    print(text)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.md").write_text(text)
        (out / f"{stem}.json").write_text(json.dumps(data, indent=1))


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a '|' inside a header or cell (e.g. "|Δp|") is escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


class Runs:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.seeds = sorted({r["seed"] for r in rows if r["part"] == "meta"})

    def pick(self, part: str, **match) -> dict[int, dict]:
        """seed -> the row of ``part`` matching every ``match`` field."""
        return {
            r["seed"]: r
            for r in self.rows
            if r["part"] == part and all(r.get(k) == v for k, v in match.items())
        }

    def values(self, part: str, field: str = "test_ne", **match) -> dict[int, float]:
        return {s: r[field] for s, r in self.pick(part, **match).items()}


def paired(a: dict[int, float], b: dict[int, float], fn) -> dict:
    return stats([fn(a[s], b[s]) for s in a if s in b])


def rel(new: float, base: float) -> float:
    return 100 * (new - base) / base


def render(folder: Path) -> dict:
    folder = Path(folder)
    runs = Runs(load_runs(folder))
    meta = runs.pick("meta")
    if not meta:
        raise SystemExit(f"no runs under {folder / 'runs'}")
    m0 = meta[min(meta)]
    ups = [r for r in runs.rows if r["part"] == "upstream"]
    depths, lengths = sorted(m0["depths"]), sorted(m0["lengths"])
    grid = [r for r in ups if r["content"] and r["L"] in depths and r["T"] in lengths]
    deep, t_max = max(depths), max(lengths)
    out: dict = {"command": m0["command"], "seeds": runs.seeds, "meta": meta}
    md = [
        f"# Sweep: {m0['dataset']}, {len(runs.seeds)} seeds ({', '.join(map(str, runs.seeds))})",
        "",
        f"Reproduce: `{m0['command']}`",
        "",
        f"Rows train/val/test: {m0['rows']}; training: `{json.dumps(m0['train'])}`; "
        f"upstream overrides: `{json.dumps(m0['base'])}`; device {m0['device']}; "
        f"machine: `{json.dumps(m0['machine'])}`.",
        "",
        "Every cell: mean ± sample std over seeds (n shown when fewer than 3 finished).",
    ]

    # --- headline: baselines beside the models ----------------------------------------------
    cols = ["test_ne", "test_ne_ctr", "test_ne_cvr", "test_auc_ctr", "test_auc_cvr"]
    models: dict[str, dict[int, dict]] = {}
    for name in ("base rate", "popularity", *SIMPLE):
        models[name] = runs.pick("baseline", model=name)
    if deep is not None:
        models[f"upstream L={deep} T={t_max}"] = runs.pick(
            "upstream", L=deep, T=t_max, content=True
        )
        models[f"ranker + upstream L={deep} T={t_max} (stale)"] = runs.pick(
            "ranker", upstream=f"L={deep} T={t_max}", mode="stale"
        )
    models["ranker, no upstream"] = runs.pick("ranker", mode="none")
    head = {
        name: {c: stats(r[c] for r in rs.values()) for c in cols} for name, rs in models.items()
    }
    out["headline"] = head
    md += ["", "## Models and baselines on the same test rows", ""]
    md.append(
        table(
            ["model", "NE (mean of heads)", "NE CTR", "NE CVR", "AUC CTR", "AUC CVR"],
            [
                [name, *(fmt(s[c], 3 if "auc" in c else 4) for c in cols)]
                for name, s in head.items()
            ],
        )
    )

    # --- targets --------------------------------------------------------------------------
    targets = []
    pop = runs.values("baseline", model="popularity")
    simple = {name: runs.values("baseline", model=name) for name in SIMPLE}
    if deep is not None:
        ranker = runs.values("ranker", upstream=f"L={deep} T={t_max}", mode="stale")
        bare = runs.values("ranker", mode="none")
        below_pop = paired(ranker, pop, lambda a, b: -rel(a, b))
        best_simple = min(simple, key=lambda k: stats(simple[k].values())["mean"])
        vs_simple = paired(ranker, simple[best_simple], lambda a, b: a - b)
        gain = paired(bare, ranker, lambda a, b: a - b)
        spread = max(stats(bare.values())["std"], stats(ranker.values())["std"])
        targets += [
            {
                "target": "ranker + upstream: NE >= 10% below popularity",
                "value": f"{fmt(below_pop, 2)} % below (negative: above)",
                "met": below_pop["n"] > 0 and below_pop["mean"] >= 10,
            },
            {
                "target": f"ranker + upstream below the best simple baseline ({best_simple})",
                "value": f"NE difference {fmt(vs_simple)}",
                "met": vs_simple["n"] > 0 and vs_simple["mean"] < 0,
            },
            {
                "target": "upstream lowers the ranker's NE by > 2 seed std",
                "value": f"{fmt(gain)} (2 std = {2 * spread:.4f})",
                "met": gain["n"] > 1 and gain["mean"] > 2 * spread,
            },
        ]
        if lengths:
            short = runs.values("upstream", L=deep, T=min(lengths), content=True)
            long = runs.values("upstream", L=deep, T=t_max, content=True)
            drop = paired(short, long, lambda a, b: a - b)
            sd = max(stats(short.values())["std"], stats(long.values())["std"])
            targets.append(
                {
                    "target": f"L={deep}: NE falls from T={min(lengths)} to T={t_max} by more "
                    "than the seed spread",
                    "value": f"fall {fmt(drop)} (spread {sd:.4f})",
                    "met": drop["n"] > 1 and drop["mean"] > sd,
                }
            )
    out["targets"] = targets
    md += ["", "## Targets", ""]
    md.append(
        table(
            ["target", "measured", "met"],
            [[t["target"], t["value"], "yes" if t["met"] else "**no**"] for t in targets],
        )
    )

    # --- NE vs T at each depth (Figure 2) ----------------------------------------------------
    if depths and lengths:
        series, rows_md = {}, []
        seq = {}
        for L in depths:
            cells = [
                stats(runs.values("upstream", L=L, T=T, content=True).values()) for T in lengths
            ]
            seq[L] = cells
            series[f"L={L}"] = (lengths, [c["mean"] for c in cells], [c["std"] for c in cells])
            rows_md.append([f"L={L}", *(fmt(c) for c in cells)])
        out["seqlen"] = {
            str(L): dict(zip(map(str, lengths), c, strict=True)) for L, c in seq.items()
        }
        hl = {f"{k} (baseline)": head[k]["test_ne"]["mean"] for k in ("popularity", "logreg")}
        plot_errorbars(
            folder / "seqlen.png",
            series,
            "sequence length T",
            "upstream test NE (mean of heads)",
            hlines={k: v for k, v in hl.items() if not math.isnan(v)},
        )
        md += ["", "## NE vs sequence length T (paper Figure 2)", ""]
        md.append(table(["depth", *(f"T={T}" for T in lengths)], rows_md))
        md += ["", "![NE vs T](seqlen.png)"]

        # --- scaling fits along T (per depth) and L (per T) ----------------------------------
        fits = []
        for axis, groups in (
            ("T", {f"L={L}": dict(L=L) for L in depths}),
            ("L", {f"T={T}": dict(T=T) for T in lengths}),
        ):
            for name, match in groups.items():
                alphas = []
                for s in runs.seeds:
                    pts = [
                        r
                        for r in grid
                        if r["seed"] == s and all(r[k] == v for k, v in match.items())
                    ]
                    if len(pts) < 2:
                        continue
                    pts.sort(key=lambda r: r["flops"])
                    x = np.log10([r["flops"] for r in pts])
                    y = [rel(r["test_ne"], pts[0]["test_ne"]) for r in pts]
                    alphas.append(-float(np.polyfit(x, y, 1)[0]))
                fits.append({"axis": axis, "at": name, "alpha": stats(alphas)})
        out["fits"] = fits
        md += [
            "",
            "## Scaling fits: dNE(%) = -alpha log10(C_seq) + beta (paper 6.4)",
            "",
            "alpha in % NE per decade of sequence FLOPs, fitted per seed (dNE relative to the "
            "axis's cheapest point); mean ± std of the per-seed slopes is the fit's uncertainty.",
            "",
        ]
        md.append(
            table(["axis", "at", "alpha"], [[f["axis"], f["at"], fmt(f["alpha"], 2)] for f in fits])
        )

    # --- content on/off (Table 2 bottom) -------------------------------------------------------
    off = [r for r in ups if not r["content"]]
    if off:
        t_mid = off[0]["T"]
        ref = runs.values("upstream", L=min(depths), T=t_mid, content=True)
        rows_md, content = [], {}
        for L in depths:
            for on in (False, True):
                v = runs.values("upstream", L=L, T=t_mid, content=on)
                d = paired(v, ref, rel)
                content[f"L={L} content={on}"] = {"ne": stats(v.values()), "dNE_%": d}
                rows_md.append(
                    [
                        f"L={L}",
                        "IDs + content" if on else "IDs only",
                        fmt(stats(v.values())),
                        fmt(d, 2),
                    ]
                )
        out["content"] = content
        md += ["", f"## Content embeddings on/off (paper Table 2 bottom), T={t_mid}", ""]
        md.append(
            table(
                ["depth", "features", "test NE", f"dNE % vs L={min(depths)} with content"], rows_md
            )
        )

    # --- transfer and staleness (Table 3c) -----------------------------------------------------
    rk = [r for r in runs.rows if r["part"] == "ranker" and r["mode"] != "none"]
    names = sorted({r["upstream"] for r in rk})
    if names:
        rows_md, transfer = [], {}
        base_name = f"L=1 T={min(lengths)}" if lengths else None
        for name in names:
            L, T = (int(x.split("=")[1]) for x in name.split()[:2])
            up = runs.values("upstream", L=L, T=T, content=True)
            stale = runs.values("ranker", upstream=name, mode="stale")
            fresh = runs.values("ranker", upstream=name, mode="fresh")
            flops = next((r["flops"] for r in ups if r["L"] == L and r["T"] == T), math.nan)
            row = {
                "flops": flops,
                "ne_up": stats(up.values()),
                "ne_down_stale": stats(stale.values()),
                "ne_down_fresh": stats(fresh.values()),
                "fresh_minus_stale": paired(fresh, stale, lambda a, b: a - b),
            }
            if base_name and name != base_name:
                bu = runs.values("upstream", L=1, T=min(lengths), content=True)
                bd = runs.values("ranker", upstream=base_name, mode="stale")
                taus = [
                    rel(stale[s], bd[s]) / rel(up[s], bu[s])
                    for s in stale
                    if s in bd and s in up and s in bu and up[s] != bu[s]
                ]
                row["dNE_up_%"] = paired(up, bu, rel)
                row["dNE_down_%"] = paired(stale, bd, rel)
                row["tau_%"] = stats(100 * t for t in taus)
            transfer[name] = row
            rows_md.append(
                [
                    name,
                    f"{flops / 1e6:.2f}M",
                    fmt(row["ne_up"]),
                    fmt(row["ne_down_stale"]),
                    fmt(row["ne_down_fresh"]),
                    fmt(row["fresh_minus_stale"]),
                    fmt(row["dNE_up_%"], 2) if "dNE_up_%" in row else "",
                    fmt(row["dNE_down_%"], 2) if "dNE_down_%" in row else "",
                    fmt(row["tau_%"], 0) if "tau_%" in row else "",
                ]
            )
        out["transfer"] = transfer
        md += [
            "",
            "## Transfer and staleness (paper Table 3c)",
            "",
            f"Ranker: demo online config (L=2, d=64, T=32) on the upstream's 256-d embedding. "
            f"dNE and tau (= dNE_down / dNE_up) against the `{base_name}` upstream, per seed. "
            "stale = embedding at the user's last conversion before the request (production); "
            "fresh = at the request (oracle).",
            "",
        ]
        md.append(
            table(
                [
                    "upstream",
                    "C_seq",
                    "NE_up",
                    "NE_down stale",
                    "NE_down fresh",
                    "fresh - stale",
                    "dNE_up %",
                    "dNE_down %",
                    "tau %",
                ],
                rows_md,
            )
        )

    # --- curves and timing -------------------------------------------------------------------
    first = min(runs.seeds)
    hist = {}
    if deep is not None:
        up0 = runs.pick("upstream", L=deep, T=t_max, content=True).get(first)
        if up0:
            hist[f"upstream L={deep} T={t_max}"] = up0["history"]
        r0 = runs.pick("ranker", upstream=f"L={deep} T={t_max}", mode="stale").get(first)
        if r0:
            hist["ranker + upstream"] = r0["history"]
    bare0 = runs.pick("ranker", mode="none").get(first)
    if bare0:
        hist["ranker, no upstream"] = bare0["history"]
    if hist:
        plot_curves(folder / "curves.png", hist)
        md += ["", f"## Training and validation curves (seed {first})", "", "![curves](curves.png)"]
    done = runs.pick("done")
    secs = [r["seconds"] for r in runs.rows if "seconds" in r]
    cut = sum(bool(r.get("cut_by_time")) for r in runs.rows)
    md += [
        "",
        "## Run",
        "",
        f"{len(secs)} models trained ({cut} stopped early by the time budget); "
        f"{sum(secs):.0f} s of training in all; "
        + ", ".join(
            f"seed {s}: {done[s]['elapsed_s']:.0f} s"
            + (" (time budget hit: later points skipped)" if done[s]["over_budget"] else "")
            if s in done
            else f"seed {s}: unfinished"
            for s in runs.seeds
        )
        + ".",
    ]
    (folder / "sweep.json").write_text(json.dumps(out, indent=1, default=str))
    (folder / "sweep.md").write_text("\n".join(md) + "\n")
    log.info("wrote %s", folder / "sweep.md")
    return out
