"""Stage `features`: the re-ranker's arrays for each model variant, and its training sample.

Aggregates are computed in Spark and written to Parquet; only catalogue-sized or
user-sized dense arrays (the same ones the bundle ships) are assembled on the driver,
with pyarrow, as bundle_writer does. The training sample is bounded (`ranker.max_users`
users, `max_negatives_per_user` candidates each) before it reaches the driver, where
shared.features.compute_features turns it into the matrix the trainer reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch.context import MODEL_VARIANTS, RANKER_VARIANT, RunContext, write_json
from batch.ranker.batch_scoring import source_matrices
from batch.spark import candidates
from batch.stages._spark import read
from batch.vectors import read_vectors
from shared.feature_arrays import load_feature_arrays, save_feature_arrays
from shared.features import (
    FEATURE_NAMES,
    ITEM_STATS,
    RECENT_ITEMS,
    USER_STATS,
    FeatureArrays,
    compute_features,
)

log = logging.getLogger(__name__)
DAY = 86400
MAX_BUCKETS = 32
MAX_GENRES = 64  # genre vocabulary cap: the most frequent ones (tags can be many)


def _csr(rows: np.ndarray, values: list[np.ndarray], size: int) -> tuple[np.ndarray, ...]:
    """CSR over rows already sorted: indptr [size + 1] and the value arrays as given."""
    counts = np.bincount(rows, minlength=size)[:size]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (indptr, *values)


def _genre_vocabulary(items: DataFrame) -> list[str]:
    rows = (
        items.select(F.explode(F.split(F.coalesce("genres", F.lit("")), r"\|")).alias("g"))
        .where(F.col("g") != "").groupBy("g").count()
        .orderBy(F.desc("count"), "g").limit(MAX_GENRES).collect()
    )
    return [r["g"] for r in rows]


def _dense(path: Path, rows: int) -> np.ndarray:
    ids, vecs = read_vectors(path)
    out = np.zeros((max(rows, int(ids.max(initial=-1)) + 1), vecs.shape[1]), dtype=np.float32)
    out[ids] = vecs
    return out


def _max_idx(df: DataFrame, column: str) -> int:
    value = df.agg(F.max(column)).first()[0]
    return -1 if value is None else int(value)


def build_arrays(ctx: RunContext, spark: SparkSession, variant: str) -> dict[str, object]:
    """Write features/<variant>/*.npy from that variant's training data."""
    emb, features = ctx.outputs.embeddings, ctx.outputs.features
    train = read(spark, emb.train_for(variant))
    items = read(spark, emb.items)
    users = read(spark, emb.users)
    item_factors = _dense(emb.item_factors(variant), 0)
    user_factors = _dense(emb.user_factors(variant), 0)
    n_items = max(_max_idx(items, "item_idx") + 1, len(item_factors))
    n_users = max(_max_idx(users, "user_idx") + 1, len(user_factors))
    bounds = train.agg(F.min("ts"), F.max("ts")).first()
    # Ages are measured from the newest event of the data, never from now(): reruns agree.
    oldest, ref = int(bounds[0] or 0), int(bounds[1] or 0)

    windows = {"pop_7d": 7, "pop_30d": 30, "pop_365d": 365}
    item_aggs = [F.sum((F.col("ts") >= ref - d * DAY).cast("int")).alias(n) for n, d in windows.items()]
    item_stats_df = train.groupBy("item_idx").agg(
        *item_aggs, F.count("*").alias("pop_all"),
        ((F.lit(ref) - F.min("ts")) / DAY).alias("age_days"),
        ((F.lit(ref) - F.max("ts")) / DAY).alias("last_days"),
        F.min("ts").alias("first_ts"), F.max("ts").alias("last_ts"),
    )
    log_pop = item_stats_df.select("item_idx", F.log1p("pop_all").alias("lp"))
    user_stats_df = train.join(log_pop, "item_idx").groupBy("user_idx").agg(
        F.count("*").alias("n_events"),
        F.sum((F.col("ts") >= ref - 30 * DAY).cast("int")).alias("n_30d"),
        ((F.lit(ref) - F.max("ts")) / DAY).alias("last_days"),
        F.avg("lp").alias("mean_log_pop"),
        F.min("ts").alias("first_ts"), F.max("ts").alias("last_ts"),
    )
    # Time buckets for "popular when the user was last active": at most MAX_BUCKETS of
    # them over the data's span, at least a week wide.
    width = max(7 * DAY, -(-(ref - oldest + 1) // MAX_BUCKETS))
    n_buckets = int((ref - oldest) // width) + 1
    item_bucket = train.groupBy(
        "item_idx", F.floor((F.col("ts") - oldest) / width).cast("int").alias("bucket")
    ).agg(F.count("*").alias("n"))
    vocab = _genre_vocabulary(items)
    genre_of = F.create_map(*[x for i, g in enumerate(vocab) for x in (F.lit(g), F.lit(i))])
    item_genre = (
        items.select("item_idx", F.explode(F.split(F.coalesce("genres", F.lit("")), r"\|")).alias("g"))
        .select("item_idx", genre_of[F.col("g")].alias("genre")).where(F.col("genre").isNotNull())
        .distinct()
    )
    user_genre = (
        train.select("user_idx", "item_idx").join(item_genre, "item_idx")
        .groupBy("user_idx", "genre").agg(F.count("*").alias("n"))
        .withColumn("share", F.col("n") / F.sum("n").over(Window.partitionBy("user_idx")))
    )
    recent = candidates.recent_history(train, RECENT_ITEMS)
    tmp = features.scratch(variant)
    for name, df in (("item_stats", item_stats_df), ("user_stats", user_stats_df),
                     ("item_genre", item_genre), ("user_genre", user_genre),
                     ("recent", recent.select("user_idx", "item_idx", "pos")),
                     ("item_bucket", item_bucket)):
        df.coalesce(1).write.mode("overwrite").parquet(str(tmp / name))

    t = pq.read_table(tmp / "item_stats").to_pandas()
    item_stats = np.zeros((n_items, len(ITEM_STATS)), dtype=np.float32)
    item_stats[:, ITEM_STATS.index("age_days")] = item_stats[:, ITEM_STATS.index("last_days")] = (
        (ref - oldest) / DAY  # never interacted: older than anything in the data
    )
    item_stats[t["item_idx"].to_numpy()] = t[list(ITEM_STATS)].to_numpy(dtype=np.float32)
    item_times = np.full((n_items, 2), np.nan)
    item_times[t["item_idx"].to_numpy()] = t[["first_ts", "last_ts"]].to_numpy(dtype=np.float64)
    t = pq.read_table(tmp / "user_stats").to_pandas()
    user_stats = np.zeros((n_users, len(USER_STATS)), dtype=np.float32)
    user_stats[t["user_idx"].to_numpy()] = t[list(USER_STATS)].to_numpy(dtype=np.float32)
    user_times = np.full((n_users, 2), np.nan)
    user_times[t["user_idx"].to_numpy()] = t[["first_ts", "last_ts"]].to_numpy(dtype=np.float64)
    t = pq.read_table(tmp / "item_bucket").to_pandas()
    item_buckets = np.zeros((n_items, n_buckets), dtype=np.float32)
    item_buckets[t["item_idx"].to_numpy(), t["bucket"].to_numpy()] = t["n"].to_numpy()
    t = pq.read_table(tmp / "item_genre").to_pandas()
    item_genres = np.zeros((n_items, max(len(vocab), 1)), dtype=np.float32)
    item_genres[t["item_idx"].to_numpy(), t["genre"].to_numpy()] = 1.0
    t = pq.read_table(tmp / "user_genre").to_pandas()
    user_genres = np.zeros((n_users, max(len(vocab), 1)), dtype=np.float32)
    user_genres[t["user_idx"].to_numpy(), t["genre"].to_numpy()] = t["share"].to_numpy()
    t = pq.read_table(tmp / "recent").to_pandas().sort_values(["user_idx", "pos"])
    recent_indptr, recent_indices = _csr(
        t["user_idx"].to_numpy(), [t["item_idx"].to_numpy(dtype=np.int32)], n_users
    )
    # The same CSR the co-occurrence source scores against (shared/cooc.py).
    neighbors = candidates.read_neighbors(ctx.outputs.candidates.neighbors(variant), n_items)
    pad = np.zeros((n_items - len(item_factors), item_factors.shape[1]), np.float32)
    upad = np.zeros((n_users - len(user_factors), user_factors.shape[1]), np.float32)
    arrays = FeatureArrays(
        item_stats=item_stats, item_genres=item_genres, user_stats=user_stats,
        user_genres=user_genres, neighbor_indptr=neighbors.indptr,
        neighbor_indices=neighbors.indices, neighbor_sims=neighbors.sims,
        recent_indptr=recent_indptr, recent_indices=recent_indices,
        item_times=item_times, user_times=user_times, item_buckets=item_buckets,
        bucket_edges=oldest + width * np.arange(n_buckets + 1, dtype=np.float64),
        bucket_totals=item_buckets.sum(axis=0, dtype=np.float64),
        item_factors=np.vstack([item_factors, pad]), user_factors=np.vstack([user_factors, upad]),
    )
    save_feature_arrays(arrays, features.arrays(variant))
    info: dict[str, object] = {"n_items": n_items, "n_users": n_users, "genres": vocab,
                               "reference_ts": ref}
    write_json(features.info(variant), info)
    return {"n_items": n_items, "n_users": n_users, "n_genres": len(vocab)}


def _with_explicit_negatives(ctx: RunContext, spark: SparkSession, labelled: DataFrame,
                             labels: DataFrame) -> DataFrame:
    """labelled candidates plus an `explicit` column: True for the (user, item) pairs of
    embeddings.explicit_negatives (ignored impressions, dislikes), with label 0. One that
    is no candidate of the user's is added as a row of its own, its source columns null
    (no source proposed it: the features see it as such). A pair that is a label (the user
    engaged with it in the label window) stays a positive. ranker.impression_negatives
    off: every row explicit=False, the sample as before."""
    labelled = labelled.withColumn("candidate", F.lit(True))
    if not ctx.config.ranker.impression_negatives:
        return labelled.withColumn("explicit", F.lit(False))
    explicit = (
        read(spark, ctx.outputs.embeddings.explicit_negatives).select("user_idx", "item_idx").distinct()
        .join(labels.select("user_idx", "item_idx"), ["user_idx", "item_idx"], "left_anti")
    )
    marked = labelled.join(explicit.withColumn("explicit", F.lit(True)), ["user_idx", "item_idx"], "left") \
        .fillna(False, subset=["explicit"])
    extra = explicit.join(labelled.select("user_idx", "item_idx"), ["user_idx", "item_idx"], "left_anti") \
        .withColumn("label", F.lit(0)).withColumn("explicit", F.lit(True)) \
        .withColumn("candidate", F.lit(False))
    return marked.unionByName(extra, allowMissingColumns=True)


def sample_rows(labelled: DataFrame, seed: int, max_negatives: int, max_explicit: int) -> DataFrame:
    """The training rows of labelled candidates (columns user_idx, item_idx, label,
    explicit, candidate: False for an explicit negative no source proposed).

    Negatives are the user's own candidates (what the ranker must tell apart), a seeded
    random `max_negatives` of them, drawn exactly as with impression negatives off;
    positives are all kept. Explicit negatives (shown and ignored, or disliked) are added
    on top, up to `max_explicit` a user: they never displace a sampled candidate, so the
    sample with them is a superset of the sample without them."""
    is_candidate = F.col("candidate")
    by_hash = F.xxhash64("user_idx", "item_idx", F.lit(seed))
    candidate_order = Window.partitionBy("user_idx", "candidate").orderBy(by_hash)
    explicit_order = Window.partitionBy("user_idx", "explicit").orderBy(by_hash)
    return (
        labelled
        .withColumn("r", F.row_number().over(candidate_order))
        .withColumn("r_explicit", F.row_number().over(explicit_order))
        .where((F.col("label") == 1)
               | (is_candidate & (F.col("r") <= max_negatives))
               | (F.col("explicit") & (F.col("r_explicit") <= max_explicit)))
        .drop("r", "r_explicit")
    )


def training_sample(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    """Labelled candidates of the ranker window -> features/train_sample.npz."""
    cfg = ctx.config.ranker
    features = ctx.outputs.features
    cands = read(spark, ctx.outputs.candidates.merged(RANKER_VARIANT))
    labels = read(spark, ctx.outputs.embeddings.ranker_labels)
    n_rel = labels.groupBy("user_idx").agg(F.count("*").alias("n_rel"))
    labelled = cands.join(labels.withColumn("label", F.lit(1)), ["user_idx", "item_idx"], "left")
    labelled = labelled.fillna(0, subset=["label"])
    labelled = _with_explicit_negatives(ctx, spark, labelled, labels)
    users = (
        labelled.where(F.col("label") == 1).select("user_idx").distinct()
        .withColumn("h", F.xxhash64("user_idx", F.lit(cfg.seed)))
        .orderBy("h", "user_idx").limit(cfg.max_users)
        # Users, not rows, are held out: early stopping sees users it never trained on.
        .withColumn("is_val", (F.abs(F.col("h")) % 1000) < int(cfg.val_share * 1000))
        .drop("h").join(n_rel, "user_idx")
    )
    sample = sample_rows(labelled.join(users, "user_idx"), cfg.seed, cfg.max_negatives_per_user,
                         cfg.impression_negatives_per_user)
    path = features.scratch("sample")
    sample.orderBy("user_idx", "item_idx").coalesce(1).write.mode("overwrite").parquet(str(path))
    pdf = pq.read_table(path).to_pandas().sort_values(["user_idx", "item_idx"], ignore_index=True)
    arrays = load_feature_arrays(features.arrays(RANKER_VARIANT))
    parts = []
    for user, group in pdf.groupby("user_idx", sort=True):
        scores, ranks = source_matrices(group)
        parts.append(compute_features(arrays, int(user), group["item_idx"].to_numpy(), scores, ranks))
    x = np.concatenate(parts) if parts else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    np.savez(
        features.train_sample, x=x,
        y=pdf["label"].to_numpy(np.float32), user=pdf["user_idx"].to_numpy(np.int64),
        is_val=pdf["is_val"].to_numpy(bool), n_rel=pdf["n_rel"].to_numpy(np.int64),
    )
    return {"rows": len(pdf), "positives": int(pdf["label"].sum()),
            "explicit_negatives": int(pdf["explicit"].sum()),
            "explicit_negatives_outside_candidates": int((pdf["explicit"] & ~pdf["candidate"]).sum()),
            "users": int(pdf["user_idx"].nunique()), "val_users": int(pdf.loc[pdf.is_val, "user_idx"].nunique())}


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    report: dict[str, object] = {v: build_arrays(ctx, spark, v) for v in MODEL_VARIANTS}
    report["sample"] = training_sample(ctx, spark)
    write_json(ctx.outputs.features.report, report)
    return report
