"""Stage `embeddings`: stable id maps, the evaluation and ranker splits, ALS factors per variant."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from batch.context import MODEL_VARIANTS, RANKER_VARIANT, RunContext, write_json
from batch.spark import als, idmaps, split
from batch.stages._spark import write


def _indexed_interactions(ctx: RunContext, spark: SparkSession) -> DataFrame:
    return spark.read.parquet(ctx.path("embeddings", "interactions.parquet"))


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    clean = spark.read.parquet(ctx.path("validate", "clean.parquet"))
    items = spark.read.parquet(ctx.path("validate", "items.parquet"))
    user_map = idmaps.extend_map(spark, ctx.idmap_dir / "users", clean, "user_id")
    item_map = idmaps.extend_map(
        spark, ctx.idmap_dir / "items", items.select("item_id").unionByName(clean.select("item_id")), "item_id"
    )
    out = ctx.stage_dir("embeddings")
    indexed = (
        clean.join(user_map, "user_id")
        .join(item_map.withColumnRenamed("idx", "item_idx"), "item_id")
        .withColumnRenamed("idx", "user_idx")
        .select("user_idx", "item_idx", "ts", "event_type", "weight")
    )
    write(indexed.orderBy("user_idx", "ts", "item_idx"), str(out / "interactions.parquet"), 4)
    indexed = _indexed_interactions(ctx, spark)
    train, test = split.split(indexed, ctx.config.split)
    write(train.orderBy("user_idx", "ts", "item_idx"), str(out / "train.parquet"), 4)
    write(test.orderBy("user_idx", "item_idx"), str(out / "_test_all.parquet"))
    # Metrics are measured on a deterministic sample of the held-out users: at millions of
    # users a sample of tens of thousands gives the same numbers to the third decimal, and
    # the eval variant's candidates and lists are then built for those users only.
    test_all = spark.read.parquet(ctx.path("embeddings", "_test_all.parquet"))
    eval_users = split.sample_users(test_all, ctx.config.split.max_eval_users, ctx.config.split.seed)
    write(test_all.join(eval_users, "user_idx").orderBy("user_idx", "item_idx"), str(out / "test.parquet"))
    # The re-ranker's window: the train split split again by the same protocol (a global
    # cutoff would leave it empty, so per-user temporal there): candidates from the older
    # part, labels from the newer part; the test split stays unseen by the ranker.
    rank_split = ctx.config.split
    if rank_split.protocol == "cutoff":
        rank_split = rank_split.model_copy(update={"protocol": "temporal"})
    rank_train, rank_labels = split.split(
        spark.read.parquet(ctx.path("embeddings", "train.parquet")), rank_split
    )
    write(rank_train.orderBy("user_idx", "ts", "item_idx"), str(out / "ranker_train.parquet"), 4)
    write(rank_labels.orderBy("user_idx", "item_idx"), str(out / "ranker_labels.parquet"))
    # The maps the bundle needs: only this run's ids, with their stable numbers.
    write(
        spark.read.parquet(ctx.path("validate", "users.parquet")).join(user_map, "user_id")
        .withColumnRenamed("idx", "user_idx").orderBy("user_idx"),
        str(out / "users.parquet"),
    )
    write(
        items.join(item_map, "item_id").withColumnRenamed("idx", "item_idx").orderBy("item_idx"),
        str(out / "items.parquet"),
    )
    sources = {
        RANKER_VARIANT: spark.read.parquet(ctx.path("embeddings", "ranker_train.parquet")),
        "eval": spark.read.parquet(ctx.path("embeddings", "train.parquet")),
        "full": indexed,
    }
    for variant in MODEL_VARIANTS:
        user_f, item_f = als.train_als(sources[variant], ctx.config.als)
        write(user_f.orderBy("user_idx"), str(out / variant / "user_factors.parquet"), 2)
        write(item_f.orderBy("item_idx"), str(out / variant / "item_factors.parquet"))
    test = spark.read.parquet(ctx.path("embeddings", "test.parquet"))
    counts: dict[str, object] = {
        "train": spark.read.parquet(ctx.path("embeddings", "train.parquet")).count(),
        "test": test.count(),
        "test_users_held_out": test_all.select("user_idx").distinct().count(),
        "test_users_evaluated": test.select("user_idx").distinct().count(),
    }
    write_json(out / "stats.json", counts)
    return counts
