"""Stage 6: per-user candidates from several sources, each tagged with source and score.

Sources: ANN over user vectors (FAISS, loaded once per Spark task), item-item
co-occurrence over recent histories, and decayed popularity per region (with a global
list for users without one). Items the user has seen are excluded from every source.
Output rows: (user_idx, item_idx, source, score, rank).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from shared.bundle import GLOBAL_SEGMENT
from shared.config import CandidateConfig

CANDIDATE_SCHEMA = StructType(
    [
        StructField("user_idx", IntegerType(), False),
        StructField("item_idx", IntegerType(), False),
        StructField("source", StringType(), False),
        StructField("score", FloatType(), False),
        StructField("rank", IntegerType(), False),
    ]
)
SOURCES = ("ann", "cooc", "popular")
_MAX_SEEN_OVERFETCH = 2000


def _top_per_user(scored: DataFrame, k: int, source: str) -> DataFrame:
    by_score = Window.partitionBy("user_idx").orderBy(F.desc("score"), F.asc("item_idx"))
    return (
        scored.withColumn("rank", F.row_number().over(by_score))
        .where(F.col("rank") <= k)
        .select(
            F.col("user_idx").cast("int"),
            F.col("item_idx").cast("int"),
            F.lit(source).alias("source"),
            F.col("score").cast("float"),
            F.col("rank").cast("int"),
        )
    )


def seen_items(train: DataFrame) -> DataFrame:
    return train.select("user_idx", "item_idx").distinct()


def ann_candidates(
    spark: SparkSession, user_vectors: DataFrame, train: DataFrame, index_path: Path, k: int
) -> DataFrame:
    """Top-k unseen items by inner product, searched in Spark tasks (one FAISS thread each)."""
    spark.sparkContext.addFile(str(index_path))
    index_name = index_path.name
    seen = seen_items(train).groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen"))
    users = user_vectors.join(seen, "user_idx", "left")

    def search(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import faiss
        import numpy as np

        faiss.omp_set_num_threads(1)
        index = faiss.read_index(SparkFiles.get(index_name))
        for pdf in batches:
            if pdf.empty:
                continue
            vectors = np.stack(pdf["vector"].to_numpy()).astype(np.float32)
            seen_lists = [s if s is not None else [] for s in pdf["seen"]]
            overfetch = min(max((len(s) for s in seen_lists), default=0), _MAX_SEEN_OVERFETCH)
            fetch = int(min(index.ntotal, k + overfetch))
            scores, ids = index.search(vectors, fetch)
            out_users, out_items, out_scores, out_ranks = [], [], [], []
            for row, user in enumerate(pdf["user_idx"].to_numpy()):
                seen_set = set(seen_lists[row])
                rank = 0
                for item, score in zip(ids[row], scores[row], strict=True):
                    if item < 0 or item in seen_set:
                        continue
                    rank += 1
                    out_users.append(user)
                    out_items.append(item)
                    out_scores.append(score)
                    out_ranks.append(rank)
                    if rank == k:
                        break
            yield pd.DataFrame(
                {
                    "user_idx": np.asarray(out_users, dtype=np.int32),
                    "item_idx": np.asarray(out_items, dtype=np.int32),
                    "source": "ann",
                    "score": np.asarray(out_scores, dtype=np.float32),
                    "rank": np.asarray(out_ranks, dtype=np.int32),
                }
            )

    return users.mapInPandas(search, CANDIDATE_SCHEMA)


def recent_history(train: DataFrame, length: int) -> DataFrame:
    """Each user's `length` most recent distinct items, with recency position (1 = newest)."""
    last = train.groupBy("user_idx", "item_idx").agg(F.max("ts").alias("ts"))
    newest_first = Window.partitionBy("user_idx").orderBy(F.desc("ts"), F.desc("item_idx"))
    return last.withColumn("pos", F.row_number().over(newest_first)).where(F.col("pos") <= length)


def item_neighbors(train: DataFrame, config: CandidateConfig) -> DataFrame:
    """Top co-occurring items per item by cosine over recent histories: (item_idx, neighbor_idx, sim)."""
    hist = recent_history(train, config.cooc_history).select("user_idx", "item_idx")
    # Pair counts grow with users x history^2; a deterministic sample of users estimates
    # the similarities well enough and bounds the cost on large data.
    sampled = (
        train.select("user_idx").distinct()
        .withColumn("h", F.xxhash64("user_idx"))
        .orderBy("h").limit(config.cooc_max_users).select("user_idx")
    )
    hist = hist.join(sampled, "user_idx")
    counts = hist.groupBy("item_idx").agg(F.count("*").alias("n"))
    pairs = (
        hist.alias("a")
        .join(hist.alias("b"), "user_idx")
        .where(F.col("a.item_idx") != F.col("b.item_idx"))
        .groupBy(F.col("a.item_idx").alias("item_idx"), F.col("b.item_idx").alias("neighbor_idx"))
        .agg(F.count("*").alias("together"))
        .where(F.col("together") >= config.cooc_min_count)
    )
    sims = (
        pairs.join(counts, "item_idx")
        .join(counts.select(F.col("item_idx").alias("neighbor_idx"), F.col("n").alias("n_b")),
              "neighbor_idx")
        .withColumn("sim", F.col("together") / F.sqrt(F.col("n") * F.col("n_b")))
    )
    best = Window.partitionBy("item_idx").orderBy(F.desc("sim"), F.asc("neighbor_idx"))
    return (
        sims.withColumn("r", F.row_number().over(best))
        .where(F.col("r") <= config.cooc_neighbors)
        .select("item_idx", "neighbor_idx", F.col("sim").cast("float").alias("sim"))
    )


def cooc_candidates(train: DataFrame, neighbors: DataFrame, config: CandidateConfig) -> DataFrame:
    """Score = sum of similarities to the user's recent items, newer items weighing more."""
    hist = recent_history(train, config.cooc_score_history)
    scored = (
        hist.join(neighbors, "item_idx")
        .withColumn("w", F.col("sim") / F.log2(F.col("pos") + 1))
        .groupBy("user_idx", F.col("neighbor_idx").alias("item_idx"))
        .agg(F.sum("w").alias("score"))
        .join(seen_items(train), ["user_idx", "item_idx"], "left_anti")
    )
    return _top_per_user(scored, config.cooc_k, "cooc")


def popular_lists(
    train: DataFrame, user_regions: DataFrame, config: CandidateConfig, k: int
) -> DataFrame:
    """Decayed popularity per segment: (segment, item_idx, score, rank).

    Each interaction weighs exp(-age / trending_days), the age measured from the newest
    interaction in the training data, so the lists follow what is trending and depend
    on the data alone.
    """
    newest = train.agg(F.max("ts")).first()[0] or 0
    half_life = float(config.trending_days * 86400)
    weighted = train.withColumn("w", F.exp(-(F.lit(newest) - F.col("ts")) / F.lit(half_life)))
    by_region = weighted.join(user_regions, "user_idx", "inner").groupBy("region", "item_idx").agg(
        F.sum("w").alias("score")
    ).withColumnRenamed("region", "segment")
    overall = weighted.groupBy("item_idx").agg(F.sum("w").alias("score")).withColumn(
        "segment", F.lit(GLOBAL_SEGMENT)
    )
    both = by_region.unionByName(overall)
    order = Window.partitionBy("segment").orderBy(F.desc("score"), F.asc("item_idx"))
    return (
        both.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= k)
        .select("segment", F.col("item_idx").cast("int"), F.col("score").cast("float"), "rank")
    )


def popular_candidates(
    train: DataFrame, user_regions: DataFrame, popular: DataFrame, config: CandidateConfig
) -> DataFrame:
    """The user's segment list (global when the user has no region), minus seen items."""
    users = (
        train.select("user_idx")
        .distinct()
        .join(user_regions, "user_idx", "left")
        .withColumn("segment", F.coalesce(F.col("region"), F.lit(GLOBAL_SEGMENT)))
        .select("user_idx", "segment")
    )
    scored = (
        users.join(popular, "segment")
        .select("user_idx", "item_idx", "score")
        .join(seen_items(train), ["user_idx", "item_idx"], "left_anti")
    )
    return _top_per_user(scored, config.popular_k, "popular")


def merge_candidates(sources: list[DataFrame], weights: dict[str, float]) -> DataFrame:
    """One row per (user, item): the sources that proposed it, their scores and ranks, and
    a reciprocal-rank-fusion score used to order the merged set."""
    union = sources[0]
    for extra in sources[1:]:
        union = union.unionByName(extra)
    aggs = [F.sort_array(F.collect_set("source")).alias("sources")]
    for name in SOURCES:
        aggs.append(F.max(F.when(F.col("source") == name, F.col("score"))).alias(f"score_{name}"))
        aggs.append(F.min(F.when(F.col("source") == name, F.col("rank"))).alias(f"rank_{name}"))
    merged = union.groupBy("user_idx", "item_idx").agg(*aggs)
    return with_fused_score(merged, weights)


def with_fused_score(merged: DataFrame, weights: dict[str, float]) -> DataFrame:
    """Weighted reciprocal-rank fusion (the RRF constant 60 of Cormack et al.)."""
    fused = F.lit(0.0)
    for name in SOURCES:
        weight = weights.get(name, 0.0)
        fused = fused + F.coalesce(F.lit(weight) / (F.lit(60.0) + F.col(f"rank_{name}")), F.lit(0.0))
    return merged.withColumn("fused_score", fused.cast("float"))
