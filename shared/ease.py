"""EASE, the closed-form item-item model (Steck 2019, "Embarrassingly Shallow Autoencoders").

    P = (XᵀX + λI)⁻¹,   B = I − P·diag(1/diag(P)),  i.e. B[i, j] = −P[i, j] / P[j, j], B[j, j] = 0

X is the binary user x item matrix over a chosen set of items (the `select_items` most
interacted, so the dense N x N inverse fits memory); a user's score for item j is
Σ over the user's items i of B[i, j]. Defined once here, numpy only: the nightly `ease`
candidate source (batch/spark/ease.py builds the Gram in Spark and solves on the driver)
and the external hold-out harness's EASE baseline (batch/evaluation/holdout.py) both call
these functions.

Memory: the Gram and the inverse are float32 N x N (N = 20,000: 1.6 GB each). The solve is
LAPACK's LU inverse through numpy (float32); XᵀX + λI is symmetric positive definite for
λ > 0, so it is always solvable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.metrics import discounts, ideal_dcg

LAMBDA_GRID: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
TUNE_K = 10


def select_items(counts: np.ndarray, max_items: int, min_count: int) -> np.ndarray:
    """int64 [N]: the catalogue indices EASE covers, ascending: the items with at least
    `min_count` interactions, the `max_items` most interacted of them (ties: lower id)."""
    counts = np.asarray(counts, dtype=np.int64)
    eligible = np.flatnonzero(counts >= max(min_count, 1))
    order = eligible[np.lexsort((eligible, -counts[eligible]))][:max_items]
    return np.sort(order)


def column_map(selected: np.ndarray, n_items: int) -> np.ndarray:
    """int64 [n_items]: the EASE column of each catalogue item, -1 for items not covered."""
    cols = np.full(n_items, -1, dtype=np.int64)
    cols[selected] = np.arange(selected.size)
    return cols


def add_gram(gram: np.ndarray, user_columns: Iterable[np.ndarray]) -> np.ndarray:
    """Add each user's outer product (its distinct EASE columns) to `gram` in place."""
    for cols in user_columns:
        cols = np.unique(np.asarray(cols, dtype=np.int64))
        if cols.size:
            gram[np.ix_(cols, cols)] += 1  # no repeated index: a plain fancy add is exact
    return gram


def gram_matrix(user_columns: Iterable[np.ndarray], n: int) -> np.ndarray:
    """int32 [n, n]: XᵀX of the users' column lists (co-occurrence counts, counts on the
    diagonal)."""
    return add_gram(np.zeros((n, n), dtype=np.int32), user_columns)


def solve(gram: np.ndarray, lam: float) -> np.ndarray:
    """float32 [n, n]: the EASE weights B for this Gram and λ (> 0)."""
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    a = np.asarray(gram, dtype=np.float32).copy()
    a[np.diag_indices_from(a)] += np.float32(lam)
    p = np.linalg.inv(a)
    del a
    diag = np.diag(p).copy()
    p /= -diag[None, :]  # B[i, j] = -P[i, j] / P[j, j]
    np.fill_diagonal(p, 0.0)
    return p


def user_scores(weights: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float32 [n]: one user's EASE score of every column (its own columns included)."""
    cols = np.unique(np.asarray(cols, dtype=np.int64))
    if cols.size == 0:
        return np.zeros(weights.shape[1], dtype=np.float32)
    return weights[cols].sum(axis=0, dtype=np.float32)


@dataclass(frozen=True)
class TopItems:
    cols: np.ndarray  # int64, EASE columns in rank order
    scores: np.ndarray  # float32


def top_unseen(weights: np.ndarray, cols: np.ndarray, k: int,
               exclude: np.ndarray | None = None) -> TopItems:
    """The k best columns by score the user does not have (`cols`, plus `exclude`: other
    columns never to propose), score descending then column ascending. A user without a
    covered item gets nothing: EASE has no opinion about them."""
    cols = np.asarray(cols, dtype=np.int64)
    if cols.size == 0 or k <= 0:
        return TopItems(np.empty(0, np.int64), np.empty(0, np.float32))
    scores = user_scores(weights, cols)
    banned = np.zeros(scores.size, dtype=bool)
    banned[cols] = True
    if exclude is not None and exclude.size:
        banned[exclude] = True
    candidates = np.flatnonzero(~banned)
    k = min(k, candidates.size)
    if k == 0:
        return TopItems(np.empty(0, np.int64), np.empty(0, np.float32))
    got = scores[candidates]
    part = np.argpartition(-got, k - 1)[:k] if k < candidates.size else np.arange(candidates.size)
    chosen = candidates[part]
    order = np.lexsort((chosen, -scores[chosen]))
    chosen = chosen[order]
    return TopItems(chosen, scores[chosen].astype(np.float32))


def mean_ndcg(weights: np.ndarray, train_cols: Sequence[np.ndarray],
              held_out: Sequence[np.ndarray], n_relevant: Sequence[int], k: int = TUNE_K) -> float:
    """Mean nDCG@k of EASE's top-k over users: train_cols (the user's known columns),
    held_out (their held-out columns, covered items only), n_relevant (all held-out items,
    covered or not: an item EASE cannot propose still counts in the ideal DCG)."""
    disc, ideal = discounts(k), ideal_dcg(k)
    total = 0.0
    for known, rel, n_rel in zip(train_cols, held_out, n_relevant, strict=True):
        if n_rel <= 0:
            continue
        top = top_unseen(weights, known, k).cols
        hits = np.isin(top, rel)
        total += float(disc[: top.size][hits].sum()) / float(ideal[min(n_rel, k) - 1])
    return total / max(len(train_cols), 1)


@dataclass(frozen=True)
class Tuned:
    lam: float
    ndcg: float
    by_lambda: dict[float, float]
    weights: np.ndarray  # solve(gram, lam): the search computed it already


def tune_lambda(gram: np.ndarray, train_cols: Sequence[np.ndarray], held_out: Sequence[np.ndarray],
                n_relevant: Sequence[int], grid: Sequence[float] = LAMBDA_GRID) -> Tuned:
    """The λ of `grid` whose weights (from `gram`, the training part's Gram) give the best
    mean nDCG@10 on the held-out part (ties: the smaller λ, the first in grid order)."""
    by_lambda: dict[float, float] = {}
    best, best_weights = float(grid[0]), None
    for lam in grid:
        weights = solve(gram, lam)
        by_lambda[float(lam)] = mean_ndcg(weights, train_cols, held_out, n_relevant)
        if best_weights is None or by_lambda[float(lam)] > by_lambda[best]:
            best, best_weights = float(lam), weights
        del weights
    assert best_weights is not None, "an empty grid"
    return Tuned(best, by_lambda[best], by_lambda, best_weights)
