"""Weighted reciprocal-rank fusion of the candidate sources, and the search for its weights.

fused_score(item) = sum over SOURCES, in SOURCES order, of weight[s] / (RRF_K + rank_s(item)),
a source that did not propose the item contributing nothing. The sum runs source by source
in float64 and is stored as float32, so the Spark column expression that mirrors it
(batch/spark/fusion.fused_score_column) gives the same bits; tests/spark/test_fusion.py
checks that on the same data.

Until a learned re-ranker orders the candidates (and whenever none ships) the lists are
ordered by this score. Which source deserves most weight depends on the data, so the
weights are picked by coordinate ascent on nDCG@10 (`tune_weights`) over a sample of the
evaluation users; the candidates stage does that once and writes every variant's
fused_score with the result. numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from shared.metrics import grouped_ndcg
from shared.sources import SOURCES

RRF_K = 60.0  # Cormack et al.
GRID = (0.0, 0.25, 0.5, 1.0, 2.0)  # the values tune_weights tries for each weight
TUNE_ROUNDS = 2  # passes of coordinate ascent over the sources
TUNE_K = 10  # tune_weights maximises nDCG at this cutoff


def weight_vector(weights: Mapping[str, float]) -> np.ndarray:
    """float64 [len(SOURCES)]: the weights in SOURCES order, 0 for a source not named."""
    return np.array([float(weights.get(s, 0.0)) for s in SOURCES], dtype=np.float64)


def weight_dict(weights: np.ndarray) -> dict[str, float]:
    return {s: float(w) for s, w in zip(SOURCES, weights, strict=True)}


def fused_scores(ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float64 [n]: the fused score of each row.

    ranks: [n, len(SOURCES)], 1-based; NaN or 0 where the source did not propose the item.
    weights: [len(SOURCES)] (weight_vector).
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 2 or ranks.shape[1] != len(SOURCES):
        raise ValueError(f"ranks must be [n, {len(SOURCES)}], got {ranks.shape}")
    present = np.isfinite(ranks) & (ranks > 0)
    safe = np.where(present, ranks, 1.0)
    total = np.zeros(ranks.shape[0], dtype=np.float64)
    for j in range(len(SOURCES)):  # source by source, as the Spark expression adds them
        total = total + np.where(present[:, j], weights[j] / (RRF_K + safe[:, j]), 0.0)
    return total


def tune_weights(users: np.ndarray, ranks: np.ndarray, relevant: np.ndarray,
                 n_rel: np.ndarray, n_users: int,
                 start: np.ndarray) -> tuple[np.ndarray, float]:
    """Coordinate ascent over GRID, TUNE_ROUNDS passes, from `start`: the weights with the
    best mean nDCG@TUNE_K of the fused order, and that nDCG.

    Rows are candidates: user, ranks [n, len(SOURCES)] as for fused_scores, relevant (bool),
    n_rel (the user's number of relevant items). The mean runs over n_users users, those
    without a candidate row counting zero. A change must gain more than 1e-9 to be taken.
    """
    weights = np.asarray(start, dtype=np.float64).copy()

    def quality(w: np.ndarray) -> float:
        return grouped_ndcg(users, fused_scores(ranks, w), relevant, n_rel, TUNE_K, n_users)

    best = quality(weights)
    for _, j in itertools.product(range(TUNE_ROUNDS), range(len(SOURCES))):
        for value in GRID:
            trial = weights.copy()
            trial[j] = value
            if not trial.any():
                continue
            score = quality(trial)
            if score > best + 1e-9:
                best, weights = score, trial
    return weights, best
