"""``python -m loadtests.reports.render`` (``make docs``): benchmark pages from result JSON.

Reads every ``docs/benchmarks/results/*.json`` (the schema of ``loadtests.bench.common``) and
writes, for each, ``docs/benchmarks/<benchmark>.md``: the title, the machine, the exact command
that reproduces it, its description, its tables, its summary lines and any plots its ``data``
asks for. Then the index ``docs/benchmarks.md``: one section per result with its summary
lines, and a link to every other page under ``docs/benchmarks/``. Every figure on a rendered
page comes from a result file; nothing is typed into a template.

A result may ask for plots in ``data["plots"]``::

    {"file": "model-scoring.png", "title": str, "xlabel": str, "ylabel": str,
     "x": [..], "series": {"label": [..]}, "logx": bool, "logy": bool}
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from loadtests.bench.common import REPO_ROOT, RESULTS_DIR, machine_line, markdown_table, read_result

log = logging.getLogger(__name__)

DOCS = REPO_ROOT / "docs"
MARKER = "<!-- rendered by python -m loadtests.reports.render from {source}; do not edit -->"


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result file, checked against the schema, in benchmark-name order."""
    docs = [read_result(path) for path in sorted(results_dir.glob("*.json"))]
    names = [d["benchmark"] for d in docs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"more than one result for {duplicates} in {results_dir}")
    return sorted(docs, key=lambda d: d["benchmark"])


def _load_after(doc: dict[str, Any]) -> str:
    after = "/".join(f"{x:.2f}" for x in doc.get("load_after") or [])
    return f"load {after or '?'} at the end"


def render_page(doc: dict[str, Any], source: str, plots: list[str]) -> str:
    """The Markdown page of one result (plots: the image file names already drawn)."""
    lines = [
        MARKER.format(source=source),
        f"# {doc['title']}",
        "",
        f"Reproduce: `{doc['command']}`",
        "",
        f"Machine: {machine_line(doc['machine'])} at the start, {_load_after(doc)}. "
        f"Run started {doc.get('started_at', '?')}, took {doc.get('seconds', '?')} s.",
        "",
    ]
    if doc.get("description"):
        lines += [doc["description"], ""]
    if doc["summary"]:
        lines += ["## Summary", "", *(f"- {s}" for s in doc["summary"]), ""]
    for table in doc["tables"]:
        lines += [f"## {table['title']}", "", markdown_table(table["columns"], table["rows"]), ""]
        if table.get("note"):
            lines += [table["note"], ""]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def draw_plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw the plots the result asks for (matplotlib, when installed); returns file names."""
    specs = (doc.get("data") or {}).get("plots") or []
    if not specs:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: %s is rendered without plots", doc["benchmark"])
        return []
    drawn = []
    for spec in specs:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, ys in spec["series"].items():
            ax.plot(spec["x"], ys, marker="o", label=label)
        ax.set(title=spec.get("title", ""), xlabel=spec.get("xlabel", ""),
               ylabel=spec.get("ylabel", ""))  # fmt: skip
        if spec.get("logx"):
            ax.set_xscale("log")
        if spec.get("logy"):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / spec["file"], dpi=100, metadata={"Software": None})
        plt.close(fig)
        drawn.append(spec["file"])
    return drawn


def render_index(docs: list[dict[str, Any]], pages_dir: Path, rendered: set[str]) -> str:
    lines = [
        MARKER.format(source=f"{RESULTS_DIR.relative_to(REPO_ROOT)}/*.json"),
        "# Benchmarks",
        "",
        "Every figure below was measured by the command on its page, which also records the "
        "machine (CPU, ISA flags, cores, load average, torch version). Figures from one machine "
        "are compared as ratios within one run. `make bench-report` re-measures and re-renders "
        "everything; `make docs` re-renders the pages from the result files in "
        "`docs/benchmarks/results/`.",
        "",
    ]
    for doc in docs:
        page = f"benchmarks/{doc['benchmark']}.md"
        lines += [f"## [{doc['title']}]({page})", "", f"`{doc['command']}`", ""]
        lines += [f"- {s}" for s in doc["summary"]] + [""]
    others = sorted(p for p in pages_dir.glob("*.md") if p.stem not in rendered)
    if others:
        lines += [
            "## Pages measured by the command on the page",
            "",
            "These pages are written by their benchmark directly; each names its command.",
            "",
        ]
        for path in others:
            heading = next(
                (ln.lstrip("# ").strip() for ln in path.read_text().splitlines()
                 if ln.startswith("#")),
                path.stem,
            )  # fmt: skip
            lines.append(f"- [{heading}](benchmarks/{path.name})")
        lines.append("")
    return "\n".join(lines)


def render(results_dir: Path = RESULTS_DIR, docs_dir: Path = DOCS) -> list[Path]:
    """Write every page and the index; returns the paths written."""
    pages_dir = docs_dir / "benchmarks"
    pages_dir.mkdir(parents=True, exist_ok=True)
    docs = load_results(results_dir)
    written = []
    for doc in docs:
        source = f"results/{doc['benchmark']}.json"
        page = pages_dir / f"{doc['benchmark']}.md"
        page.write_text(render_page(doc, source, draw_plots(doc, pages_dir)))
        written.append(page)
    index = docs_dir / "benchmarks.md"
    index.write_text(render_index(docs, pages_dir, {d["benchmark"] for d in docs}))
    written.append(index)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="result JSON directory")
    p.add_argument("--out", type=Path, default=DOCS, help="docs directory to write into")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for path in render(args.results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
