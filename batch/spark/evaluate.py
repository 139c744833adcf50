"""Offline evaluation on the held-out split, computed in Spark (no driver collect).

The formulas are those of shared/metrics.py, mirrored in Spark SQL with its ideal-DCG
table (tests/spark/test_evaluate.py checks both agree): binary relevance, nDCG with the
ideal DCG over min(|test|, k), precision, recall and MAP at k. Users of the test set
without a list count as zeros.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shared.metrics import METRIC_NAMES, ideal_dcg


def rank_lists(scored: DataFrame, score_col: str, k: int) -> DataFrame:
    """(user_idx, item_idx, score_col) -> top-k per user with rank 1..k."""
    order = Window.partitionBy("user_idx").orderBy(F.desc(score_col), F.asc("item_idx"))
    return (
        scored.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= k)
        .select("user_idx", "item_idx", F.col(score_col).alias("score"), "rank")
    )


def ranking_metrics(lists: DataFrame, test: DataFrame, k: int) -> dict[str, float]:
    """lists(user_idx, item_idx, rank), test(user_idx, item_idx) -> mean metrics at k."""
    ideal = F.array(*[F.lit(float(v)) for v in ideal_dcg(k)])
    relevant = test.groupBy("user_idx").agg(F.count("*").alias("n_rel"))
    hit_order = Window.partitionBy("user_idx").orderBy("rank")
    hits = (
        lists.where(F.col("rank") <= k)
        .join(test, ["user_idx", "item_idx"])
        .withColumn("hit_no", F.row_number().over(hit_order))
        .groupBy("user_idx")
        .agg(
            F.sum(1 / F.log2(F.col("rank") + 1)).alias("dcg"),
            F.count("*").alias("n_hits"),
            F.sum(F.col("hit_no") / F.col("rank")).alias("ap_sum"),
        )
    )
    per_user = (
        relevant.join(hits, "user_idx", "left")
        .fillna(0, subset=["dcg", "n_hits", "ap_sum"])
        .withColumn("m", F.least(F.col("n_rel"), F.lit(k)))
        .select(
            (F.col("dcg") / F.element_at(ideal, F.col("m").cast("int"))).alias("ndcg"),
            (F.col("n_hits") / F.lit(k)).alias("precision"),
            (F.col("n_hits") / F.col("n_rel")).alias("recall"),
            (F.col("ap_sum") / F.col("m")).alias("map"),
        )
    )
    row = per_user.agg(*[F.avg(c).alias(c) for c in METRIC_NAMES]).first()
    return {f"{name}@{k}": float(row[name] or 0.0) for name in METRIC_NAMES}


def coverage(lists: DataFrame, k: int, catalog_size: int) -> float:
    n = lists.where(F.col("rank") <= k).select("item_idx").distinct().count()
    return n / catalog_size if catalog_size else 0.0


def full_list_share(lists: DataFrame, test: DataFrame, k: int) -> float:
    """Share of test users who received a full list of k items."""
    users = test.select("user_idx").distinct()
    full = lists.where(F.col("rank") == k).select("user_idx").distinct()
    n_users = users.count()
    return users.join(full, "user_idx").count() / n_users if n_users else 0.0


def candidate_recall(
    ranked: DataFrame, rank_col: str, test: DataFrame, cutoffs: tuple[int, ...]
) -> dict[int, float]:
    """Mean over test users of |top-n candidates ∩ test| / |test|, for each n."""
    relevant = test.groupBy("user_idx").agg(F.count("*").alias("n_rel"))
    hits = ranked.where(F.col(rank_col).isNotNull()).join(test, ["user_idx", "item_idx"])
    per_cut = [F.sum((F.col(rank_col) <= n).cast("int")).alias(f"h{n}") for n in cutoffs]
    per_user = relevant.join(hits.groupBy("user_idx").agg(*per_cut), "user_idx", "left").fillna(0)
    row = per_user.agg(*[F.avg(F.col(f"h{n}") / F.col("n_rel")).alias(f"r{n}") for n in cutoffs]).first()
    return {n: float(row[f"r{n}"] or 0.0) for n in cutoffs}
