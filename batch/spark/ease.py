"""The `ease` candidate source's model: the Gram matrix from Spark, the solve on the driver.

XᵀX over the N items EASE covers (shared.ease.select_items: the most interacted, with a
floor) is summed by Spark: each task adds the outer products of its users' item sets into
one dense int32 N x N partial Gram, and a tree reduce adds the partials (N = 3,000: 36 MB
each). The driver then solves (shared.ease.solve, numpy/LAPACK) and writes B as .npy, which
the candidate tasks memory-map (batch/spark/candidates.py). λ is chosen on the ranker
window (trained on ranker_train, scored against ranker_labels, a sample of its users), so
neither the evaluation split nor the published data tunes it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.spark import split
from shared import ease

log = logging.getLogger(__name__)


@dataclass
class EaseModel:
    items: np.ndarray  # int64 item_idx of the columns, ascending
    gram: np.ndarray  # int32 [N, N]
    interaction_share: float  # of the (distinct user, item) pairs, those on covered items
    timings: dict[str, float] = field(default_factory=dict)


def _distinct(train: DataFrame) -> DataFrame:
    return train.select("user_idx", "item_idx").distinct()


def item_counts(train: DataFrame, n_items: int) -> np.ndarray:
    """int64 [n_items]: the users that have each item."""
    rows = _distinct(train).groupBy("item_idx").count().toPandas()
    counts = np.zeros(n_items, dtype=np.int64)
    counts[rows["item_idx"].to_numpy(np.int64)] = rows["count"].to_numpy(np.int64)
    return counts


def user_columns(spark: SparkSession, train: DataFrame, items: np.ndarray,
                 n_items: int) -> DataFrame:
    """(user_idx, cols): each user's covered items as EASE columns (users with none left out)."""
    cols = ease.column_map(items, n_items)
    mapping = spark.createDataFrame(
        [(int(i), int(c)) for i, c in zip(items, cols[items], strict=True)], "item_idx int, col int")
    return (_distinct(train).join(F.broadcast(mapping), "item_idx")
            .groupBy("user_idx").agg(F.collect_list("col").alias("cols")))


def gram(spark: SparkSession, train: DataFrame, items: np.ndarray, n_items: int) -> np.ndarray:
    """int32 [N, N]: XᵀX over the covered items, summed over Spark tasks."""
    n = int(items.size)
    per_user = user_columns(spark, train, items, n_items)

    def partial(rows: Any) -> Any:
        import numpy as np

        from shared import ease as shared_ease

        acc = np.zeros((n, n), dtype=np.int32)
        shared_ease.add_gram(acc, (np.asarray(r["cols"], dtype=np.int64) for r in rows))
        yield acc

    parts = per_user.rdd.mapPartitions(partial)
    return parts.treeReduce(np.add, depth=2) if parts.getNumPartitions() else np.zeros((n, n), np.int32)


def fit_gram(spark: SparkSession, train: DataFrame, n_items: int, max_items: int,
             min_count: int) -> EaseModel:
    start = time.perf_counter()
    counts = item_counts(train, n_items)
    items = ease.select_items(counts, max_items, min_count)
    share = float(counts[items].sum() / max(int(counts.sum()), 1))
    g = gram(spark, train, items, n_items)
    return EaseModel(items, g, share, {"gram_seconds": round(time.perf_counter() - start, 2)})


def _columns_of(frame: DataFrame, items: np.ndarray, n_items: int) -> dict[int, np.ndarray]:
    cols = ease.column_map(items, n_items)
    pdf = frame.groupBy("user_idx").agg(F.collect_list("item_idx").alias("items")).toPandas()
    out = {}
    for user, got in zip(pdf["user_idx"], pdf["items"], strict=True):
        mapped = cols[np.asarray(got, dtype=np.int64)]
        out[int(user)] = mapped[mapped >= 0]
    return out


def tune(model: EaseModel, train: DataFrame, labels: DataFrame, n_items: int,
         grid: tuple[float, ...], users: int, seed: int) -> ease.Tuned:
    """λ of `grid` with the best nDCG@10 of EASE's top 10 (from `model`, trained on `train`)
    against `labels`, over a deterministic sample of the labelled users."""
    sample = split.sample_users(labels, users, seed)
    known = _columns_of(_distinct(train).join(F.broadcast(sample), "user_idx"), model.items, n_items)
    held = labels.select("user_idx", "item_idx").distinct().join(F.broadcast(sample), "user_idx")
    n_rel = {int(r["user_idx"]): int(r["n"]) for r in
             held.groupBy("user_idx").agg(F.count("*").alias("n")).collect()}
    rel = _columns_of(held, model.items, n_items)
    order = sorted(n_rel)
    empty = np.empty(0, np.int64)
    start = time.perf_counter()
    tuned = ease.tune_lambda(model.gram, [known.get(u, empty) for u in order],
                             [rel.get(u, empty) for u in order], [n_rel[u] for u in order], grid)
    model.timings["tune_seconds"] = round(time.perf_counter() - start, 2)
    return tuned


def solve(model: EaseModel, lam: float) -> np.ndarray:
    start = time.perf_counter()
    weights = ease.solve(model.gram, lam)
    model.timings["solve_seconds"] = round(time.perf_counter() - start, 2)
    return weights


def save(weights: np.ndarray, items: np.ndarray, weights_path: Path, items_path: Path) -> None:
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(weights_path, np.ascontiguousarray(weights, dtype=np.float32))
    np.save(items_path, np.asarray(items, dtype=np.int64))
