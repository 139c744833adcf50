"""The Spark stages of the nightly run. Each reads the previous stage's outputs from
`ART/work/<run_date>/` and overwrites its own, so any stage can be re-run alone."""

from __future__ import annotations

import hashlib
import logging
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.pipeline import (
    als,
    candidates,
    evaluate,
    feature_stage,
    fusion,
    idmaps,
    inputs,
    plots,
    split,
    validate,
)
from batch.pipeline.context import (
    MODEL_VARIANTS,
    RANKER_VARIANT,
    VARIANTS,
    RunContext,
    code_version,
    read_json,
    write_json,
)
from shared.bundle import GLOBAL_SEGMENT

log = logging.getLogger(__name__)
EVAL_K = 10
RECALL_CUTOFFS = (100, 500)


def _write(df: DataFrame, path: str, partitions: int = 1) -> None:
    df.coalesce(partitions).write.mode("overwrite").parquet(path)


def _input_fingerprint(ctx: RunContext) -> str:
    """Hash of input file sizes and mtimes plus config and code: the run id's suffix."""
    digest = hashlib.sha256()
    for name in ("interactions", "items", "users"):
        found = inputs.find_input(ctx.data_dir, name)
        if found is None:
            continue
        files = sorted(found.rglob("*")) if found.is_dir() else [found]
        for f in files:
            if f.is_file():
                digest.update(f"{f.relative_to(ctx.data_dir)}:{f.stat().st_size}".encode())
                with f.open("rb") as fh:  # head and tail: cheap, and catches rewrites
                    digest.update(fh.read(1 << 16))
                    fh.seek(max(0, f.stat().st_size - (1 << 16)))
                    digest.update(fh.read())
    digest.update(ctx.config.fingerprint().encode())
    digest.update(code_version().encode())
    return digest.hexdigest()[:8]


def stage_validate(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    raw = inputs.read_interactions(spark, ctx.data_dir)
    items = inputs.read_optional(spark, ctx.data_dir, "items", ("item_id",))
    users = inputs.read_optional(spark, ctx.data_dir, "users", ("user_id",))
    if items is not None:
        for col in ("title", "genres", "available_regions"):
            if col not in items.columns:
                items = items.withColumn(col, F.lit(None).cast("string"))
        items = (
            items.withColumn("item_id", F.trim("item_id"))
            .where(F.col("item_id").isNotNull() & (F.col("item_id") != ""))
            .dropDuplicates(["item_id"])
            .select("item_id", "title", "genres", "available_regions")
        )
    if users is not None:
        if "region" not in users.columns:
            users = users.withColumn("region", F.lit(None).cast("string"))
        users = (
            users.withColumn("user_id", F.trim("user_id"))
            .where(F.col("user_id").isNotNull() & (F.col("user_id") != ""))
            .dropDuplicates(["user_id"])
            .select("user_id", "region")
        )
    result = validate.validate(raw, ctx.run_end_epoch, ctx.config.validation, items)
    out = ctx.stage_dir("validate")
    _write(result.clean.orderBy("user_id", "ts", "item_id", "event_type"), str(out / "clean.parquet"), 4)
    _write(result.quarantine.orderBy("row_number"), str(out / "quarantine.parquet"))
    clean = spark.read.parquet(str(out / "clean.parquet"))
    if items is None:  # no catalogue given: the catalogue is what users interacted with
        items = clean.select("item_id").distinct().select(
            "item_id", *[F.lit(None).cast("string").alias(c) for c in ("title", "genres", "available_regions")]
        )
    _write(items.orderBy("item_id"), str(out / "items.parquet"))
    if users is None:
        users = clean.select("user_id").distinct().withColumn("region", F.lit(None).cast("string"))
    _write(users.orderBy("user_id"), str(out / "users.parquet"))
    quarantine = spark.read.parquet(str(out / "quarantine.parquet"))
    reasons = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    n_bad = sum(reasons.values())
    window = clean.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    stats: dict[str, object] = {
        "run_id": f"{ctx.run_date.isoformat()}-{_input_fingerprint(ctx)}",
        "rows_clean": clean.count(),
        "rows_quarantined": n_bad,
        "quarantine_reasons": reasons,
        "data_window": {"min_ts": window["lo"], "max_ts": window["hi"]},
    }
    write_json(out / "stats.json", stats)
    rows_clean = int(stats["rows_clean"])  # type: ignore[call-overload]
    validate.check_threshold(rows_clean + n_bad, n_bad, reasons, ctx.config.validation.max_bad_share)
    return stats


def _indexed_interactions(ctx: RunContext, spark: SparkSession) -> DataFrame:
    return spark.read.parquet(ctx.path("embeddings", "interactions.parquet"))


def stage_embeddings(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
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
    _write(indexed.orderBy("user_idx", "ts", "item_idx"), str(out / "interactions.parquet"), 4)
    indexed = _indexed_interactions(ctx, spark)
    train, test = split.split(indexed, ctx.config.split)
    _write(train.orderBy("user_idx", "ts", "item_idx"), str(out / "train.parquet"), 4)
    _write(test.orderBy("user_idx", "item_idx"), str(out / "_test_all.parquet"))
    # Metrics are measured on a deterministic sample of the held-out users: at millions of
    # users a sample of tens of thousands gives the same numbers to the third decimal, and
    # the eval variant's candidates and lists are then built for those users only.
    test_all = spark.read.parquet(ctx.path("embeddings", "_test_all.parquet"))
    eval_users = split.sample_users(test_all, ctx.config.split.max_eval_users, ctx.config.split.seed)
    _write(test_all.join(eval_users, "user_idx").orderBy("user_idx", "item_idx"), str(out / "test.parquet"))
    # The re-ranker's window: the train split split again by the same protocol (a global
    # cutoff would leave it empty, so per-user temporal there): candidates from the older
    # part, labels from the newer part; the test split stays unseen by the ranker.
    rank_split = ctx.config.split
    if rank_split.protocol == "cutoff":
        rank_split = rank_split.model_copy(update={"protocol": "temporal"})
    rank_train, rank_labels = split.split(
        spark.read.parquet(ctx.path("embeddings", "train.parquet")), rank_split
    )
    _write(rank_train.orderBy("user_idx", "ts", "item_idx"), str(out / "ranker_train.parquet"), 4)
    _write(rank_labels.orderBy("user_idx", "item_idx"), str(out / "ranker_labels.parquet"))
    # The maps the bundle needs: only this run's ids, with their stable numbers.
    _write(
        spark.read.parquet(ctx.path("validate", "users.parquet")).join(user_map, "user_id")
        .withColumnRenamed("idx", "user_idx").orderBy("user_idx"),
        str(out / "users.parquet"),
    )
    _write(
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
        _write(user_f.orderBy("user_idx"), str(out / variant / "user_factors.parquet"), 2)
        _write(item_f.orderBy("item_idx"), str(out / variant / "item_factors.parquet"))
    test = spark.read.parquet(ctx.path("embeddings", "test.parquet"))
    counts: dict[str, object] = {
        "train": spark.read.parquet(ctx.path("embeddings", "train.parquet")).count(),
        "test": test.count(),
        "test_users_held_out": test_all.select("user_idx").distinct().count(),
        "test_users_evaluated": test.select("user_idx").distinct().count(),
    }
    write_json(out / "stats.json", counts)
    return counts


def _train_for(ctx: RunContext, spark: SparkSession, variant: str) -> DataFrame:
    names = {RANKER_VARIANT: "ranker_train.parquet", "eval": "train.parquet"}
    name = names.get(variant, "interactions.parquet")
    return spark.read.parquet(ctx.path("embeddings", name))


def _user_regions(ctx: RunContext, spark: SparkSession) -> DataFrame:
    return (
        spark.read.parquet(ctx.path("embeddings", "users.parquet"))
        .where(F.col("region").isNotNull() & (F.col("region") != ""))
        .select("user_idx", "region")
    )


def _candidate_users(ctx: RunContext, spark: SparkSession, variant: str) -> DataFrame | None:
    """Whose candidates a variant needs: the published (full) variant every user's; the
    eval variant the evaluated users'; the ranker variant a sample of the users with labels
    in the ranker window, from which the training sample is drawn. None: everyone."""
    if variant == "eval":
        return spark.read.parquet(ctx.path("embeddings", "test.parquet")).select("user_idx").distinct()
    if variant == RANKER_VARIANT:
        labels = spark.read.parquet(ctx.path("embeddings", "ranker_labels.parquet"))
        return split.sample_users(labels, ctx.config.ranker.candidate_users, ctx.config.ranker.seed)
    return None


def stage_candidates(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    cfg = ctx.config.candidates
    regions = _user_regions(ctx, spark)
    out = ctx.stage_dir("candidates")
    report: dict[str, object] = {}
    item_ids = pq.read_table(ctx.path("embeddings", "items.parquet"), columns=["item_idx"]).column(0)
    n_items = int(pc.max(item_ids).as_py() or 0) + 1
    for variant in MODEL_VARIANTS:
        train = _train_for(ctx, spark, variant).cache()
        user_vectors = spark.read.parquet(ctx.path("embeddings", f"{variant}/user_factors.parquet"))
        # Popular lists and item neighbours come from every user's history; the per-user
        # sources only run for the users this variant needs.
        scope = _candidate_users(ctx, spark, variant)
        users_train = train if scope is None else train.join(F.broadcast(scope), "user_idx")
        popular = candidates.popular_lists(train, regions, cfg, max(cfg.popular_k, ctx.config.publish.top_k))
        _write(popular.orderBy("segment", "rank"), str(out / variant / "popular.parquet"))
        neighbors = candidates.item_neighbors(train, cfg)
        _write(neighbors.orderBy("item_idx", "neighbor_idx"), str(out / variant / "neighbors.parquet"))
        train.unpersist()
        tables = candidates.source_tables(
            out / variant / "neighbors.parquet", out / variant / "popular.parquet", n_items
        )
        merged = candidates.user_candidates(
            spark, users_train, user_vectors, regions, tables,
            ctx.stage_dir("index") / f"index-{variant}.faiss", cfg,
        )
        # Already sorted by (user, item) within each partition: written as is, no global sort.
        merged.write.mode("overwrite").parquet(str(out / variant / "candidates.parquet"))
    merged = spark.read.parquet(ctx.path("candidates", "eval/candidates.parquet"))
    test = spark.read.parquet(ctx.path("embeddings", "test.parquet"))
    recall: dict[str, dict[str, float]] = {}
    for source in candidates.SOURCES:
        got = evaluate.candidate_recall(merged, f"rank_{source}", test, RECALL_CUTOFFS)
        recall[source] = {f"recall@{n}": v for n, v in got.items()}
    fused_rank = evaluate.rank_lists(merged, "fused_score", max(RECALL_CUTOFFS))
    got = evaluate.candidate_recall(fused_rank, "rank", test, RECALL_CUTOFFS)
    recall["merged"] = {f"recall@{n}": v for n, v in got.items()}
    report["candidate_recall"] = recall
    write_json(out / "recall.json", report)
    return report


def stage_rank(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    """Ranked lists per user from the merged candidates: the learned re-ranker's order
    (batch/ranker/rerank.py) when one was trained, else the fused order, which is always
    kept (fused.parquet) as the fallback and evaluated; plus the popularity baseline
    (global popular, unseen) for evaluation."""
    out = ctx.stage_dir("rank")
    top_k = ctx.config.publish.top_k
    weights, tuned_ndcg = fusion.tune_weights(
        spark.read.parquet(ctx.path("candidates", "eval/candidates.parquet")),
        spark.read.parquet(ctx.path("embeddings", "test.parquet")),
        candidates.SOURCES,
        ctx.config.candidates.source_weights,
    )
    write_json(out / "fusion.json", {"weights": weights, "sample_ndcg@10": tuned_ndcg})

    def write_fused(variant: str) -> str:
        merged = candidates.with_fused_score(
            spark.read.parquet(ctx.path("candidates", f"{variant}/candidates.parquet")), weights
        )
        lists = evaluate.rank_lists(merged, "fused_score", top_k).join(
            merged.select("user_idx", "item_idx", "sources"), ["user_idx", "item_idx"]
        )
        _write(lists.orderBy("user_idx", "rank"), str(out / variant / "fused.parquet"), 4)
        return str(out / variant / "fused.parquet")

    write_fused("eval")  # always: evaluated beside the re-ranked lists
    from batch.ranker.rerank import rerank  # torch-free, but onnxruntime in the tasks

    ranker = rerank(ctx, spark, top_k)
    write_json(out / "ranker.json", ranker)
    for variant in VARIANTS:
        chosen = ranker.get("lists", {}).get(variant)  # type: ignore[attr-defined]
        if chosen is None:  # no re-ranked lists: the fused order is what ships
            chosen = str(out / variant / "fused.parquet") if variant == "eval" else write_fused(variant)
        elif variant != "eval":  # the published variant's fused order would go unused
            shutil.rmtree(out / variant / "fused.parquet", ignore_errors=True)
        # Both kinds of list are written sorted by (user, rank): a copy, not a re-sort.
        target = out / variant / "recommendations.parquet"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(chosen, target)
    # Popularity baseline: the global list, minus what each test user has seen.
    train = _train_for(ctx, spark, "eval")
    test_users = spark.read.parquet(ctx.path("embeddings", "test.parquet")).select("user_idx").distinct()
    popular = spark.read.parquet(ctx.path("candidates", "eval/popular.parquet")).where(
        F.col("segment") == GLOBAL_SEGMENT
    )
    baseline = (
        test_users.crossJoin(popular.select("item_idx", "score"))
        .join(candidates.seen_items(train), ["user_idx", "item_idx"], "left_anti")
    )
    _write(evaluate.rank_lists(baseline, "score", EVAL_K).orderBy("user_idx", "rank"),
           str(out / "eval" / "popularity_baseline.parquet"))
    return {"top_k": top_k, "fusion_weights": weights, "ranker": ranker.get("status")}


def _reranker_metrics(ctx: RunContext, spark: SparkSession, test: DataFrame) -> dict[str, object]:
    """The fused fallback and both re-ranked versions, on the same test split; "merged" in
    the main lists is what is published (re-ranked, or fused when no ranker shipped)."""
    rank_dir = ctx.stage_dir("rank") / "eval"
    ranker = read_json(ctx.stage_dir("rank") / "ranker.json")
    lists = {"fused": "fused.parquet", "reranked_fp32": "reranked_fp32.parquet",
             "reranked_int8": "reranked_int8.parquet"}
    found = {name: evaluate.ranking_metrics(spark.read.parquet(str(rank_dir / f)), test, EVAL_K)
             for name, f in lists.items() if (rank_dir / f).exists()}
    return {"status": ranker.get("status"), "shipped": ranker.get("shipped", "fused"),
            "reason": ranker.get("reason"), "parity": ranker.get("parity"), "lists": found}


def stage_evaluate(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    test = spark.read.parquet(ctx.path("embeddings", "test.parquet")).cache()
    catalog = spark.read.parquet(ctx.path("embeddings", "items.parquet")).count()
    lists = {
        "merged": spark.read.parquet(ctx.path("rank", "eval/recommendations.parquet")),
        "popularity": spark.read.parquet(ctx.path("rank", "eval/popularity_baseline.parquet")),
    }
    merged = spark.read.parquet(ctx.path("candidates", "eval/candidates.parquet"))
    reranker = _reranker_metrics(ctx, spark, test)
    for source in candidates.SOURCES:
        lists[source] = merged.where(F.col(f"rank_{source}") <= EVAL_K).select(
            "user_idx", "item_idx", F.col(f"rank_{source}").alias("rank")
        )
    metrics: dict[str, object] = {
        "protocol": ctx.config.split.protocol,
        "k": EVAL_K,
        "users_evaluated": test.select("user_idx").distinct().count(),
        "lists": {name: evaluate.ranking_metrics(df, test, EVAL_K) for name, df in lists.items()},
        "coverage": {name: evaluate.coverage(df, EVAL_K, catalog) for name, df in lists.items()},
        "full_list_share": evaluate.full_list_share(lists["merged"], test, EVAL_K),
    }
    metrics.update(read_json(ctx.stage_dir("candidates") / "recall.json"))
    # A wall-clock time is no quality metric and differs between identical reruns; the
    # manifest's `index` field keeps it.
    index_info = read_json(ctx.stage_dir("index") / "info-eval.json")
    metrics["index"] = {k: v for k, v in index_info.items() if k != "build_seconds"}
    metrics["fusion"] = read_json(ctx.stage_dir("rank") / "fusion.json")
    metrics["reranker"] = reranker
    write_json(ctx.stage_dir("evaluate") / "metrics.json", metrics)
    plots.metrics_figure(metrics, ctx.stage_dir("evaluate") / "metrics.png")
    return metrics


SPARK_STAGES = {
    "validate": stage_validate,
    "embeddings": stage_embeddings,
    "candidates": stage_candidates,
    "features": feature_stage.stage_features,
    "rank": stage_rank,
    "evaluate": stage_evaluate,
}
