"""Stage 6: per-user candidates from several sources, each tagged with source and score.

Sources: ANN over user vectors (FAISS, loaded once per Spark task), item-item
co-occurrence over recent histories, EASE over whole histories (its weights memory-mapped
once per task; batch/spark/ease.py fits them), and decayed popularity per region (with a global
list for users without one). Items the user has seen are excluded from every source.
The catalogue-sized parts (item neighbours, popular lists) are Spark aggregations over
all interactions; the per-user part runs inside Spark tasks, one user at a time
(batch/spark/candidate_sources.py), and writes the merged rows:
(user_idx, item_idx, sources, score_<source>, rank_<source>, fused_score), the fused
score with the weights the caller passes (the tuned ones: batch/stages/candidates.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

from batch.spark import candidate_sources as cs
from batch.spark.shipping import ship_file
from shared.bundle import GLOBAL_SEGMENT
from shared.config import CandidateConfig
from shared.cooc import NeighborCSR, neighbor_csr
from shared.sources import RANK_COLUMNS, SCORE_COLUMNS, SOURCES

# What the Python tasks emit: numbers only (rank 0 = not proposed), cheap through Arrow.
_TASK_SCHEMA = StructType(
    [StructField("user_idx", IntegerType(), False), StructField("item_idx", IntegerType(), False)]
    + [
        field
        for score, rank in zip(SCORE_COLUMNS, RANK_COLUMNS, strict=True)
        for field in (StructField(score, FloatType(), False), StructField(rank, IntegerType(), False))
    ]
    + [StructField("fused_score", FloatType(), False)]
)
_MAX_SEEN_OVERFETCH = 2000


def seen_items(train: DataFrame) -> DataFrame:
    return train.select("user_idx", "item_idx").distinct()


def overfetch_buckets(seen_counts: np.ndarray, k: int, ntotal: int) -> np.ndarray:
    """How many neighbours to fetch per user so that k survive the seen filter: k plus the
    seen count rounded up to a power of two (at least 64), capped. Users are searched in
    groups of equal fetch size: one heavy user no longer makes a whole batch fetch
    thousands (search cost grows with the fetch size), and a user's result no longer
    depends on who shares the batch."""
    need = np.minimum(np.asarray(seen_counts, dtype=np.int64), _MAX_SEEN_OVERFETCH)
    rounded = np.maximum(64, 2 ** np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64))
    return np.minimum(ntotal, k + rounded)


def _search_past_seen(
    index: Any, vectors: np.ndarray, seen_lists: list[Any], k: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-row (scores, ids) from searches grouped by fetch size, in the rows' order."""
    fetch = overfetch_buckets(np.array([len(s) for s in seen_lists]), k, int(index.ntotal))
    scores: list[np.ndarray] = [np.empty(0, np.float32)] * len(seen_lists)
    ids: list[np.ndarray] = [np.empty(0, np.int64)] * len(seen_lists)
    for size in np.unique(fetch):
        rows = np.flatnonzero(fetch == size)
        got_scores, got_ids = index.search(vectors[rows], int(size))
        for i, row in enumerate(rows):
            scores[row], ids[row] = got_scores[i], got_ids[i]
    return scores, ids


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


def read_neighbors(neighbors_path: Path | str, n_items: int) -> NeighborCSR:
    """The stage's item_neighbors output as CSR over the whole catalogue (n_items), items
    without neighbours included: the co-occurrence source's table here and the re-ranker's
    neighbor_* arrays (batch/stages/features.py), one build for both."""
    nb = pq.read_table(neighbors_path, columns=["item_idx", "neighbor_idx", "sim"])
    return neighbor_csr(nb.column("item_idx").to_numpy(), nb.column("neighbor_idx").to_numpy(),
                        nb.column("sim").to_numpy(), n_items)


def source_tables(neighbors_path: Path, popular_path: Path, n_items: int) -> cs.SourceTables:
    """The broadcast tables, read on the driver from the stage's own Parquet outputs."""
    nb = read_neighbors(neighbors_path, n_items)
    pop = pq.read_table(popular_path).to_pandas()
    # The float score, then the id: the order a user's popular candidates are ranked in.
    pop = pop.sort_values(["segment", "score", "item_idx"], ascending=[True, False, True])
    popular = {
        str(segment): (group["item_idx"].to_numpy(np.int64), group["score"].to_numpy(np.float32))
        for segment, group in pop.groupby("segment", sort=True)
    }
    return cs.SourceTables(nb.indptr, nb.indices, nb.sims, popular)


def user_histories(train: DataFrame) -> DataFrame:
    """(user_idx, history): each user's distinct items, newest first (ties: higher id first)."""
    last = train.groupBy("user_idx", "item_idx").agg(F.max("ts").alias("ts"))
    newest_first = F.sort_array(F.collect_list(F.struct("ts", "item_idx")), asc=False)
    return last.groupBy("user_idx").agg(
        F.transform(newest_first, lambda x: x["item_idx"]).alias("history")
    )


def user_candidates(
    spark: SparkSession,
    train: DataFrame,
    user_vectors: DataFrame,
    user_regions: DataFrame,
    tables: cs.SourceTables,
    index_path: Path,
    config: CandidateConfig,
    weights: dict[str, float],
    ease_paths: tuple[Path, Path] | None = None,
) -> DataFrame:
    """Merged candidates for every user in `train`, sorted by (user, item) per partition,
    fused_score with these source weights. ease_paths: the EASE weights and items files
    (None: the source proposes nothing)."""
    index_name = ship_file(spark, index_path)
    ease_names: tuple[str, str] | None = None
    if ease_paths is not None:
        ease_names = (ship_file(spark, ease_paths[0]), ship_file(spark, ease_paths[1]))
    n_items = int(tables.neighbor_indptr.size - 1)
    shared_tables = spark.sparkContext.broadcast(tables)
    weights = dict(weights)
    users = (
        user_histories(train)
        .join(user_vectors, "user_idx", "left")
        .join(user_regions, "user_idx", "left")
        .select("user_idx", "history", "vector",
                F.coalesce(F.col("region"), F.lit(GLOBAL_SEGMENT)).alias("segment"))
        .sortWithinPartitions("user_idx")  # a fixed order: reruns write identical files
    )

    def generate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import faiss

        faiss.omp_set_num_threads(1)
        index = faiss.read_index(SparkFiles.get(index_name))
        table = shared_tables.value
        ease = None if ease_names is None else cs.EaseTable.load(
            SparkFiles.get(ease_names[0]), SparkFiles.get(ease_names[1]), n_items)
        for pdf in batches:
            if not pdf.empty:
                yield _candidates_for_batch(pdf, index, table, config, weights, ease)

    proposed = {name: F.col(rank) > 0 for name, rank in zip(SOURCES, RANK_COLUMNS, strict=True)}
    return users.mapInPandas(generate, _TASK_SCHEMA).select(
        "user_idx",
        "item_idx",
        # Alphabetical, as SOURCES is: the same list the old per-source union produced.
        F.filter(F.array(*[F.when(proposed[n], F.lit(n)) for n in SOURCES]), lambda x: x.isNotNull())
        .alias("sources"),
        *[c for n, score, rank in zip(SOURCES, SCORE_COLUMNS, RANK_COLUMNS, strict=True) for c in (
            F.when(proposed[n], F.col(score)).alias(score),
            F.when(proposed[n], F.col(rank)).alias(rank),
        )],
        "fused_score",
    )


def _candidates_for_batch(pdf: pd.DataFrame, index: Any, tables: cs.SourceTables,
                          config: CandidateConfig, weights: dict[str, float],
                          ease: cs.EaseTable | None = None) -> pd.DataFrame:
    histories = [np.asarray(h, dtype=np.int64) for h in pdf["history"]]
    has_vector = pdf["vector"].notna().to_numpy()
    ann_rows = np.flatnonzero(has_vector)
    ann_scores: list[np.ndarray] = [np.empty(0, np.float32)] * len(pdf)
    ann_ids: list[np.ndarray] = [np.empty(0, np.int64)] * len(pdf)
    if ann_rows.size:
        vectors = np.stack(pdf["vector"].to_numpy()[ann_rows]).astype(np.float32)
        got_scores, got_ids = _search_past_seen(index, vectors, [histories[r] for r in ann_rows],
                                                config.ann_k)
        for i, row in enumerate(ann_rows):
            ann_scores[row], ann_ids[row] = got_scores[i], got_ids[i]
    columns: dict[str, list[np.ndarray]] = {name: [] for name in _TASK_SCHEMA.names}
    for row, (user, segment) in enumerate(zip(pdf["user_idx"], pdf["segment"], strict=True)):
        seen = histories[row]
        merged = cs.merge(
            {
                "ann": cs.ann_list(ann_ids[row], ann_scores[row], seen, config.ann_k),
                "cooc": cs.cooc_list(seen[: config.cooc_score_history], seen, tables, config.cooc_k),
                "ease": cs.ease_list(seen, ease, config.ease_k),
                "popular": cs.popular_list(segment, seen, tables, config.popular_k),
            },
            weights,
        )
        columns["user_idx"].append(np.full(merged.items.size, user, np.int32))
        columns["item_idx"].append(merged.items.astype(np.int32))
        for name, score, rank in zip(SOURCES, SCORE_COLUMNS, RANK_COLUMNS, strict=True):
            columns[score].append(merged.scores[name])
            columns[rank].append(merged.ranks[name])
        columns["fused_score"].append(merged.fused)
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
