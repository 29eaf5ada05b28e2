"""The reliability diagram as a PNG, PDF or SVG (matplotlib is an optional extra: pip install 'cdt[plot]')."""

from __future__ import annotations

import importlib
from pathlib import Path

from cdt.errors import CdtError, UsageError

HINT = "--plot needs matplotlib, an optional extra: pip install 'cdt[plot]' (or pip install matplotlib)"


FORMATS = ("png", "pdf", "svg")  # the formats matplotlib writes with any backend


def require_matplotlib(path: Path | None = None) -> None:
    """Fail before any long work when the plot cannot be drawn: no matplotlib, or a format it does not write."""
    if path is not None and Path(path).suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"--plot {path}: the diagram is written as {', '.join('.' + f for f in FORMATS)}; "
                         "name the file with one of these")
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise CdtError(HINT) from None


def reliability_diagram(report, path: Path, title: str) -> Path:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [b for b in report.buckets if b.count]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([b.mean_prob for b in filled], [b.error_rate for b in filled], marker="o", label="critic")
    ax.set_ylabel("observed error rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    hist.bar([(b.lo + b.hi) / 2 for b in report.buckets], [b.count for b in report.buckets],
             width=[b.hi - b.lo for b in report.buckets], color="steelblue")
    hist.set_xlabel("critic P(wrong)")
    hist.set_ylabel("tokens")
    hist.set_yscale("log")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
