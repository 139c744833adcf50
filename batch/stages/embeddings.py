"""Stage `embeddings`: stable id maps, the evaluation and ranker splits, ALS factors per variant."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch.context import MODEL_VARIANTS, RunContext, write_json
from batch.spark import als, blas, idmaps, split
from batch.stages._spark import read, write
from shared.events import DISLIKE, IMPRESSION


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    valid = ctx.outputs.validate
    out = ctx.outputs.embeddings
    clean = read(spark, valid.clean)
    items = read(spark, valid.items)
    user_map = idmaps.extend_map(spark, ctx.idmap_dir / "users", clean, "user_id")
    item_map = idmaps.extend_map(
        spark, ctx.idmap_dir / "items", items.select("item_id").unionByName(clean.select("item_id")), "item_id"
    )
    indexed = (
        clean.join(user_map, "user_id")
        .join(item_map.withColumnRenamed("idx", "item_idx"), "item_id")
        .withColumnRenamed("idx", "user_idx")
        .select("user_idx", "item_idx", "ts", "event_type", "weight")
    )
    write(indexed.orderBy("user_idx", "ts", "item_idx"), out.interactions, 4)
    indexed = read(spark, out.interactions)
    negatives = _explicit_negatives(read(spark, valid.feedback), indexed, user_map, item_map)
    write(negatives.orderBy("user_idx", "item_idx"), out.explicit_negatives)
    train, test = split.split(indexed, ctx.config.split)
    write(train.orderBy("user_idx", "ts", "item_idx"), out.train, 4)
    write(test.orderBy("user_idx", "item_idx"), out.test_all)
    # Metrics are measured on a deterministic sample of the held-out users: at millions of
    # users a sample of tens of thousands gives the same numbers to the third decimal, and
    # the eval variant's candidates and lists are then built for those users only.
    test_all = read(spark, out.test_all)
    eval_users = split.sample_users(test_all, ctx.config.split.max_eval_users, ctx.config.split.seed)
    write(test_all.join(eval_users, "user_idx").orderBy("user_idx", "item_idx"), out.test)
    # The re-ranker's window: the train split split again by the same protocol (a global
    # cutoff would leave it empty, so per-user temporal there): candidates from the older
    # part, labels from the newer part; the test split stays unseen by the ranker.
    rank_split = ctx.config.split
    if rank_split.protocol == "cutoff":
        rank_split = rank_split.model_copy(update={"protocol": "temporal"})
    # "mixed": half the labels the newest events, half random older ones (split_mixed).
    carve = split.split_mixed if ctx.config.ranker.label_protocol == "mixed" else split.split
    rank_train, rank_labels = carve(read(spark, out.train), rank_split)
    write(rank_train.orderBy("user_idx", "ts", "item_idx"), out.ranker_train, 4)
    write(rank_labels.orderBy("user_idx", "item_idx"), out.ranker_labels)
    # The maps the bundle needs: only this run's ids, with their stable numbers.
    write(
        read(spark, valid.users).join(user_map, "user_id")
        .withColumnRenamed("idx", "user_idx").orderBy("user_idx"),
        out.users,
    )
    write(
        items.join(item_map, "item_id").withColumnRenamed("idx", "item_idx").orderBy("item_idx"),
        out.items,
    )
    which_blas = blas.loaded_blas(spark)
    engines: dict[str, object] = {}
    for variant in MODEL_VARIANTS:
        fit = als.train_als(read(spark, out.train_for(variant)), ctx.config.als)
        write(fit.users.orderBy("user_idx"), out.user_factors(variant), 2)
        write(fit.items.orderBy("item_idx"), out.item_factors(variant))
        engines[variant] = fit.info
    test = read(spark, out.test)
    counts: dict[str, object] = {
        "train": read(spark, out.train).count(),
        "test": test.count(),
        "test_users_held_out": test_all.select("user_idx").distinct().count(),
        "test_users_evaluated": test.select("user_idx").distinct().count(),
        "explicit_negatives": {r["event_type"]: int(r["count"]) for r in
                               read(spark, out.explicit_negatives).groupBy("event_type").count().collect()},
        "blas": which_blas,
        # Which ALS engine fitted each variant and why (batch/spark/als.py); `blas` is
        # only what the spark engine ran on.
        "als": engines,
    }
    write_json(out.stats, counts)
    return counts


def _explicit_negatives(feedback: DataFrame, interactions: DataFrame, user_map: DataFrame,
                        item_map: DataFrame) -> DataFrame:
    """One row per (user, item) the user said no to: a dislike, or an impression with no
    interaction by that user with that item anywhere in the run's data (a click, play or
    complete, from the event log or the base data, cancels it). A dislike wins over an
    impression of the same item; the newest ts is kept. Users or items this run has no
    stable id for (no interaction at all) have no lists to keep it out of: left out."""
    indexed = (
        feedback.join(user_map, "user_id").withColumnRenamed("idx", "user_idx")
        .join(item_map.withColumnRenamed("idx", "item_idx"), "item_id")
        .select("user_idx", "item_idx", "event_type", "ts")
    )
    engaged = interactions.select("user_idx", "item_idx").distinct()
    ignored = indexed.where(F.col("event_type") == IMPRESSION).join(engaged, ["user_idx", "item_idx"], "left_anti")
    rows = indexed.where(F.col("event_type") == DISLIKE).unionByName(ignored)
    first = Window.partitionBy("user_idx", "item_idx").orderBy(
        (F.col("event_type") != DISLIKE).cast("int"), F.desc("ts"))
    return rows.withColumn("_r", F.row_number().over(first)).where(F.col("_r") == 1).drop("_r")
