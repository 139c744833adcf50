"""Weights of the candidate sources in the fused ranking, chosen on the evaluation split.

Until a learned re-ranker orders the candidates, the ranked lists order them by a
weighted reciprocal-rank fusion. Which source deserves most weight depends on the data
(popularity dominates some catalogues, item-item signals others), so the weights are
picked by coordinate ascent on nDCG@10 over a bounded, deterministic sample of
evaluation users, collected to the driver (a few thousand users at most), then used for
the published lists as well.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)
GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
RRF_K = 60.0


def fused(ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ranks: float [n, n_sources] with NaN where a source did not propose the item."""
    contrib = np.where(np.isnan(ranks), 0.0, 1.0 / (RRF_K + np.nan_to_num(ranks, nan=1.0)))
    return contrib @ weights


def ndcg_at_k(users: np.ndarray, scores: np.ndarray, relevant: np.ndarray,
              n_relevant: dict[int, int], k: int = 10) -> float:
    """Mean nDCG@k over the users in n_relevant; users is sorted ascending."""
    order = np.lexsort((-scores, users))
    u, rel = users[order], relevant[order]
    starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1]
    pos = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    top = pos < k
    gains = np.where(top & rel, 1.0 / np.log2(pos + 2), 0.0)
    dcg = pd.Series(gains).groupby(u).sum()
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    total = 0.0
    for user, n_rel in n_relevant.items():
        total += dcg.get(user, 0.0) / discounts[min(n_rel, k) - 1]
    return total / len(n_relevant) if n_relevant else 0.0


def tune_weights(candidates: DataFrame, test: DataFrame, sources: tuple[str, ...],
                 defaults: dict[str, float], max_users: int = 3000) -> tuple[dict[str, float], float]:
    """Coordinate ascent over GRID for each source weight, starting from defaults."""
    sample = (
        test.select("user_idx").distinct()
        .withColumn("h", F.xxhash64("user_idx"))
        .orderBy("h").limit(max_users).select("user_idx")
    )
    cols = ["user_idx", "item_idx", *[f"rank_{s}" for s in sources]]
    cand = candidates.join(sample, "user_idx").select(*cols).toPandas()
    rel = test.join(sample, "user_idx").toPandas()
    if cand.empty or rel.empty:
        return dict(defaults), 0.0
    relevant_pairs = set(zip(rel.user_idx, rel.item_idx, strict=True))
    is_rel = np.fromiter(((u, i) in relevant_pairs for u, i in zip(cand.user_idx, cand.item_idx, strict=True)),
                         dtype=bool, count=len(cand))
    n_relevant = rel.groupby("user_idx").size().to_dict()
    users = cand["user_idx"].to_numpy()
    ranks = cand[[f"rank_{s}" for s in sources]].to_numpy(dtype=float)
    weights = np.array([defaults.get(s, 0.0) for s in sources])
    best = ndcg_at_k(users, fused(ranks, weights), is_rel, n_relevant)
    for _, j in itertools.product(range(2), range(len(sources))):
        for value in GRID:
            trial = weights.copy()
            trial[j] = value
            if not trial.any():
                continue
            score = ndcg_at_k(users, fused(ranks, trial), is_rel, n_relevant)
            if score > best + 1e-9:
                best, weights = score, trial
    chosen = {s: float(w) for s, w in zip(sources, weights, strict=True)}
    log.info("fusion weights %s (nDCG@10 %.4f on %d sampled users)", chosen, best, len(n_relevant))
    return chosen, best
