"""Ranking metrics at k with binary relevance (see ../shared/handbook/QUALITY.md).

Pure Python so the same definitions serve Spark (inside mapInPandas), the trainer and
the tests. nDCG uses an ideal DCG over min(|relevant|, k) items.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

METRIC_NAMES = ("ndcg", "precision", "recall", "map")


@dataclass(frozen=True)
class UserMetrics:
    ndcg: float
    precision: float
    recall: float
    map: float


def user_metrics(ranked: Sequence[int], relevant: Iterable[int], k: int) -> UserMetrics:
    """Metrics of one user's ranked list against their held-out items."""
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant must hold at least one item")
    top = list(ranked[:k])
    hits = [1 if item in rel else 0 for item in top]
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
    n_hits = sum(hits)
    precision_sum = 0.0
    seen_hits = 0
    for i, h in enumerate(hits):
        if h:
            seen_hits += 1
            precision_sum += seen_hits / (i + 1)
    return UserMetrics(
        ndcg=dcg / ideal,
        precision=n_hits / k,
        recall=n_hits / len(rel),
        map=precision_sum / min(len(rel), k),
    )


def mean_metrics(per_user: Sequence[UserMetrics], k: int) -> dict[str, float]:
    """Average over users; a user with no list at all counts as all-zero upstream."""
    n = len(per_user)
    if n == 0:
        return {f"{name}@{k}": 0.0 for name in METRIC_NAMES}
    return {
        f"{name}@{k}": sum(getattr(m, name) for m in per_user) / n for name in METRIC_NAMES
    }


def catalog_coverage(recommended_items: Iterable[int], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one user's list."""
    if catalog_size <= 0:
        return 0.0
    return len(set(recommended_items)) / catalog_size
