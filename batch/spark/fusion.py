"""The Spark side of the candidate fusion (shared/fusion.py defines it): the weight search
on a bounded sample of evaluation users, and the fused score as a column expression.

The search collects a deterministic sample of evaluation users' candidates to the driver
(a few thousand users at most) and runs shared.fusion.tune_weights there. The column
expression mirrors shared.fusion.fused_scores term by term (same operations, same order,
float64 then float32), so both give the same bits; tests/spark/test_fusion.py checks it.
"""

from __future__ import annotations

import logging

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shared import fusion
from shared.sources import RANK_COLUMNS, SOURCES

log = logging.getLogger(__name__)
TUNE_MAX_USERS = 3000


def fused_score_column(weights: dict[str, float]) -> Column:
    """float: shared.fusion.fused_scores over the rank_<source> columns (null: absent)."""
    total = F.lit(0.0)
    for name, rank in zip(SOURCES, RANK_COLUMNS, strict=True):
        term = F.lit(float(weights.get(name, 0.0))) / (F.lit(fusion.RRF_K) + F.col(rank))
        total = total + F.coalesce(term, F.lit(0.0))
    return total.cast("float")


def with_fused_score(candidates: DataFrame, weights: dict[str, float]) -> DataFrame:
    return candidates.withColumn("fused_score", fused_score_column(weights))


def tune_weights(candidates: DataFrame, test: DataFrame, defaults: dict[str, float],
                 max_users: int = TUNE_MAX_USERS) -> tuple[dict[str, float], float]:
    """shared.fusion.tune_weights on the candidates of at most max_users test users (a
    deterministic sample), starting from defaults: (weights, their sample nDCG@10)."""
    sample = (
        test.select("user_idx").distinct()
        .withColumn("h", F.xxhash64("user_idx"))
        .orderBy("h").limit(max_users).select("user_idx")
    )
    cand = candidates.join(sample, "user_idx").select("user_idx", "item_idx", *RANK_COLUMNS).toPandas()
    # A join's row order is not fixed, and equal fused scores keep the rows' order: sorted,
    # ties go to the lower item id (as in the ranked lists) on every rerun.
    cand = cand.sort_values(["user_idx", "item_idx"], ignore_index=True)
    rel = test.join(sample, "user_idx").toPandas()
    start = fusion.weight_vector(defaults)
    if cand.empty or rel.empty:
        return fusion.weight_dict(start), 0.0
    relevant_pairs = set(zip(rel.user_idx, rel.item_idx, strict=True))
    is_rel = np.fromiter(((u, i) in relevant_pairs for u, i in zip(cand.user_idx, cand.item_idx, strict=True)),
                         dtype=bool, count=len(cand))
    n_relevant = rel.groupby("user_idx").size()
    users = cand["user_idx"].to_numpy()
    n_rel = n_relevant.reindex(users).to_numpy()
    ranks = cand[list(RANK_COLUMNS)].to_numpy(dtype=float)
    weights, best = fusion.tune_weights(users, ranks, is_rel, n_rel, len(n_relevant), start)
    chosen = fusion.weight_dict(weights)
    log.info("fusion weights %s (nDCG@10 %.4f on %d sampled users)", chosen, best, len(n_relevant))
    return chosen, best
