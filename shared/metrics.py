"""Ranking metrics at k with binary relevance (see ../shared/handbook/QUALITY.md), defined once.

nDCG@k = DCG@k / ideal DCG@k, DCG summing discount(position) over the relevant items in the
top k (discount(p) = 1 / log2(p + 1), p = 1 for the first), the ideal DCG over
min(|relevant|, k) items. Precision, recall and MAP at k as usual; MAP divides by
min(|relevant|, k).

Three ways in, one definition (numpy only, so Spark tasks, the trainer and the service can
import it):
- `user_metrics`: one user's list; the reference the tests hold everything else to.
- `grouped_ndcg`: many users' scored candidates at once, vectorised (the re-ranker's early
  stopping and int8 choice, the fusion weight search).
- `ideal_dcg`: the table the Spark implementation (batch/spark/evaluate.py) ships as a
  literal; tests/spark/test_evaluate.py checks that Spark and `user_metrics` agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("ndcg", "precision", "recall", "map")


def discounts(k: int) -> np.ndarray:
    """float64 [k]: the DCG discount of positions 1..k, 1 / log2(position + 1)."""
    return 1.0 / np.log2(np.arange(k) + 2.0)


def ideal_dcg(k: int) -> np.ndarray:
    """float64 [k]: entry n - 1 is the ideal DCG of a user with n relevant items (n <= k)."""
    return np.cumsum(discounts(k))


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
    discount = discounts(k)
    dcg = sum(float(discount[i]) for i, h in enumerate(hits) if h)
    n_ideal = min(len(rel), k)
    n_hits = sum(hits)
    precision_sum = 0.0
    seen_hits = 0
    for i, h in enumerate(hits):
        if h:
            seen_hits += 1
            precision_sum += seen_hits / (i + 1)
    return UserMetrics(
        ndcg=dcg / float(ideal_dcg(k)[n_ideal - 1]),
        precision=n_hits / k,
        recall=n_hits / len(rel),
        map=precision_sum / n_ideal,
    )


def mean_metrics(per_user: Sequence[UserMetrics], k: int) -> dict[str, float]:
    """Average over users; a user with no list at all counts as all-zero upstream."""
    n = len(per_user)
    if n == 0:
        return {f"{name}@{k}": 0.0 for name in METRIC_NAMES}
    return {
        f"{name}@{k}": sum(getattr(m, name) for m in per_user) / n for name in METRIC_NAMES
    }


def grouped_ndcg(users: np.ndarray, scores: np.ndarray, relevant: np.ndarray,
                 n_rel: np.ndarray, k: int = 10, n_users: int | None = None) -> float:
    """Mean nDCG@k over users, each user's rows ranked by score (descending; ties keep the
    rows' order).

    Rows are one user's candidate each: users, scores, relevant (bool or > 0), n_rel (that
    user's number of relevant items, the same on all of its rows; at least 1). The mean runs
    over n_users users (default: those with rows); users without rows count zero.
    """
    users = np.asarray(users)
    if len(users) == 0:
        return 0.0
    order = np.lexsort((-np.asarray(scores), users))
    u, rel, nr = users[order], np.asarray(relevant)[order] > 0, np.asarray(n_rel)[order]
    ids, first, inverse = np.unique(u, return_index=True, return_inverse=True)
    pos = np.arange(len(u)) - first[inverse]
    gains = np.where((pos < k) & rel, discounts(k)[np.minimum(pos, k - 1)], 0.0)
    dcg = np.bincount(inverse, weights=gains, minlength=len(ids))
    per_user = dcg / ideal_dcg(k)[np.clip(nr[first], 1, k) - 1]
    return float(per_user.sum() / (len(ids) if n_users is None else n_users))


def catalog_coverage(recommended_items: Iterable[int], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one user's list."""
    if catalog_size <= 0:
        return 0.0
    return len(set(recommended_items)) / catalog_size
