"""Stage `evaluate`: metrics of every list on the held-out split, and their figure."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext, read_json, write_json
from batch.report import plots
from batch.spark import evaluate
from batch.stages._spark import EVAL_K
from batch.stages.candidates import FUSION_FILE
from shared.sources import RANK_COLUMNS, SOURCES


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


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    test = spark.read.parquet(ctx.path("embeddings", "test.parquet")).cache()
    catalog = spark.read.parquet(ctx.path("embeddings", "items.parquet")).count()
    lists = {
        "merged": spark.read.parquet(ctx.path("rank", "eval/recommendations.parquet")),
        "popularity": spark.read.parquet(ctx.path("rank", "eval/popularity_baseline.parquet")),
    }
    merged = spark.read.parquet(ctx.path("candidates", "eval/candidates.parquet"))
    reranker = _reranker_metrics(ctx, spark, test)
    for source, rank in zip(SOURCES, RANK_COLUMNS, strict=True):
        lists[source] = merged.where(F.col(rank) <= EVAL_K).select(
            "user_idx", "item_idx", F.col(rank).alias("rank")
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
    metrics["fusion"] = read_json(ctx.stage_dir("candidates") / FUSION_FILE)
    metrics["reranker"] = reranker
    write_json(ctx.stage_dir("evaluate") / "metrics.json", metrics)
    plots.metrics_figure(metrics, ctx.stage_dir("evaluate") / "metrics.png")
    return metrics
