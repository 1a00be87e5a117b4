"""The report's charts: each function takes plain numbers and returns PNG bytes (matplotlib, no pyplot).

Owns how a run looks. Figures are built with `matplotlib.figure.Figure` directly rather than pyplot, so
no global backend or figure registry is touched (safe in a Ray worker or a long-lived driver) and each
figure is freed when the function returns.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure

STATUS_COLOURS = {"ok": "#2e7d32", "invalid": "#ef6c00", "error": "#c62828"}
_OTHER = "#546e7a"
_SIZE = (6.4, 3.4)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def throughput(ends_s: Sequence[float], rows: Sequence[int]) -> bytes:
    """Cumulative committed rows (top) and rows/s per time bin (bottom) against time since the start.

    `ends_s`: commit times in seconds since the run started, one per committed shard; `rows`: its rows.
    The time axis is in seconds, minutes or hours, whichever keeps its numbers readable.
    """
    order = sorted(range(len(ends_s)), key=lambda i: ends_s[i])
    last = max(ends_s, default=0.0)
    unit, per = ("s", 1.0) if last < 180 else ("min", 60.0) if last < 3 * 3600 else ("h", 3600.0)
    t_min = [ends_s[i] / per for i in order]
    cum, total = [], 0
    for i in order:
        total += rows[i]
        cum.append(total)
    fig = Figure(figsize=(_SIZE[0], 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.step([0.0, *t_min], [0, *cum], where="post", color=STATUS_COLOURS["ok"])
    top.set_ylabel("rows committed")
    top.set_title("Throughput over time")
    span = max(t_min[-1], 1e-6) if t_min else 1.0
    nbins = max(1, min(30, len(t_min)))
    width = span / nbins
    per_bin = [0.0] * nbins
    for t, i in zip(t_min, order):
        per_bin[min(nbins - 1, int(t / width))] += rows[i]
    bottom.bar([width * (b + 0.5) for b in range(nbins)], [r / (width * per) for r in per_bin],
               width=width * 0.9, color=_OTHER)
    bottom.set_ylabel("rows/s")
    bottom.set_xlabel(f"time since the first shard started ({unit})")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _png(fig)


def histogram(values: Sequence[float], title: str, xlabel: str, integer: bool = False) -> bytes:
    """Histogram of `values` with its mean and median marked."""
    fig = Figure(figsize=_SIZE, layout="constrained")
    ax = fig.subplots()
    vals = sorted(values)
    if integer and vals:
        lo, hi = int(vals[0]), int(vals[-1])
        step = max(1, (hi - lo + 1) // 40)
        bins: int | list[float] = [b - 0.5 for b in range(lo, hi + step + 1, step)]
    else:
        bins = 30
    ax.hist(vals, bins=bins, color=_OTHER, edgecolor="white")
    if vals:
        mean = sum(vals) / len(vals)
        median = vals[len(vals) // 2]
        ax.axvline(mean, color="#1565c0", linestyle="--", label=f"mean {mean:.2f}")
        ax.axvline(median, color="#6a1b9a", linestyle=":", label=f"median {median:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{title} (n={len(vals)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.grid(alpha=0.3)
    return _png(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str,
         colours: Sequence[str] | None = None, fmt: str = "{:,.0f}") -> bytes:
    """Horizontal bars, one per label, each annotated with its value."""
    fig = Figure(figsize=(_SIZE[0], max(1.6, 0.45 * len(labels) + 0.9)), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]  # first label on top
    ax.barh(ys, values, color=list(colours) if colours else _OTHER)
    ax.set_yticks(ys, [_clip(str(lab), 40) for lab in labels])
    top = max(values, default=0) or 1
    for y, v in zip(ys, values):
        ax.text(v + top * 0.01, y, fmt.format(v), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"
