"""A picture of a run's evaluation: people look at this rather than read metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def metrics_figure(metrics: dict[str, Any], path: Path) -> Path:
    """Bar charts: nDCG@10 / P@10 / R@10 per list, and candidate recall per source."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on batch machines
    import matplotlib.pyplot as plt

    lists: dict[str, dict[str, float]] = metrics.get("lists", {})
    recall: dict[str, dict[str, float]] = metrics.get("candidate_recall", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(lists)
    width = 0.27
    for offset, metric in enumerate(("ndcg@10", "precision@10", "recall@10")):
        xs = [i + (offset - 1) * width for i in range(len(names))]
        left.bar(xs, [lists[n].get(metric, 0.0) for n in names], width, label=metric)
    left.set_xticks(range(len(names)), names)
    left.set_title(f"ranked lists vs baselines ({metrics.get('protocol', '?')} split)")
    left.legend()
    sources = list(recall)
    for offset, cut in enumerate(("recall@100", "recall@500")):
        xs = [i + (offset - 0.5) * 0.4 for i in range(len(sources))]
        right.bar(xs, [recall[s].get(cut, 0.0) for s in sources], 0.4, label=cut)
    right.set_xticks(range(len(sources)), sources)
    right.set_title("candidate recall per source")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
