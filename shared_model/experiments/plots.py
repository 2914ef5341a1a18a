"""Figures: training curves and mean ± std series with error bars (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, histories: dict[str, list[dict]]) -> None:
    """Training loss and validation loss (left) and validation mean NE (right) vs epoch."""
    plt = _pyplot()
    fig, (ax_loss, ax_ne) = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        color = f"C{k}"
        ep = [h["epoch"] for h in hist]
        ax_loss.plot(ep, [h["train_loss"] for h in hist], "--", color=color, label=f"{name} train")
        ax_loss.plot(ep, [h["loss"] for h in hist], "-o", color=color, ms=3, label=f"{name} val")
        ax_ne.plot(ep, [h["ne_mean"] for h in hist], "-o", color=color, ms=3, label=name)
    ax_loss.set_ylabel("loss (BCE, sum of heads)")
    ax_ne.set_ylabel("validation NE (mean of heads)")
    for ax in (ax_loss, ax_ne):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def plot_errorbars(
    path: Path,
    series: dict[str, tuple[list[float], list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    hlines: dict[str, float] | None = None,
) -> None:
    """``series``: name -> (x, mean, std); ``hlines``: name -> y of a reference line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, (x, mean, std) in series.items():
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
    for k, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls=":", color=f"C{k + len(series)}", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
