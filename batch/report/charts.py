"""Matplotlib charts rendered to base64 PNG (Agg backend: no display on the batch hosts)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _thin_xticks(ax: Axes, labels: Sequence[str], most: int = 12) -> None:
    """Label at most `most` ticks (30 nightly runs or 24 hours would overlap)."""
    step = max(1, -(-len(labels) // most))
    ax.set_xticks(range(0, len(labels), step), [labels[i] for i in range(0, len(labels), step)],
                  rotation=30, ha="right", fontsize=7)  # fmt: skip


def to_png_b64(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def lines(title: str, x: Sequence[str], series: Mapping[str, Sequence[float | None]],
          ylabel: str, limit: tuple[float, str] | None = None) -> str:  # fmt: skip
    """One line per series; `limit` = (y, label) draws a dashed red line (a threshold)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, ys in series.items():
        ax.plot(range(len(x)), [float("nan") if y is None else y for y in ys], marker="o",
                label=name)  # fmt: skip
    if limit is not None:
        ax.axhline(limit[0], color="#C44E52", linestyle="--", linewidth=1, label=limit[1])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    _thin_xticks(ax, list(x))
    if series or limit is not None:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png_b64(fig)


def bars(title: str, labels: Sequence[str], values: Sequence[float], ylabel: str,
         annotate: bool = True) -> str:  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 3.2))
    drawn = ax.bar(list(labels), list(values), color="#4C72B0")
    if annotate:
        ax.bar_label(drawn, fmt="%.3g", fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    return to_png_b64(fig)


def grouped_bars(title: str, labels: Sequence[str], groups: Mapping[str, Sequence[float]],
                 ylabel: str) -> str:  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(groups))
    for g, (name, values) in enumerate(groups.items()):
        xs = [i + g * width for i in range(len(labels))]
        ax.bar_label(ax.bar(xs, list(values), width=width, label=name), fmt="%.3g", fontsize=7)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(labels))], list(labels))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return to_png_b64(fig)


def lorenz(title: str, exposure: Sequence[int]) -> str:
    """Cumulative share of list entries against cumulative share of the catalog."""
    ordered = sorted(exposure)
    total = sum(ordered) or 1
    n = len(ordered) or 1
    xs, ys, acc = [0.0], [0.0], 0
    for i, v in enumerate(ordered, start=1):
        acc += v
        xs.append(i / n)
        ys.append(acc / total)
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.plot(xs, ys, label="published lists")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="equal exposure")
    ax.set_title(title)
    ax.set_xlabel("share of catalog (least exposed first)")
    ax.set_ylabel("share of list entries")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png_b64(fig)


def histogram(title: str, values: Sequence[float], xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(list(values), bins=40, color="#55A868")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests")
    ax.grid(alpha=0.3)
    return to_png_b64(fig)


def stacked_hours(title: str, hours: Sequence[str], by_reason: Mapping[str, Sequence[float]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bottom = [0.0] * len(hours)
    for reason, values in by_reason.items():
        ax.bar(range(len(hours)), list(values), bottom=bottom, label=reason)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(title)
    ax.set_ylabel("share of requests")
    _thin_xticks(ax, list(hours))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return to_png_b64(fig)
