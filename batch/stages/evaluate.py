"""Stage `evaluate`: metrics of every list on the held-out split, and their figure."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext, read_json, write_json
from batch.report import plots
from batch.spark import evaluate
from batch.stages._spark import EVAL_K, read
from shared.sources import RANK_COLUMNS, SOURCES


def _reranker_metrics(ctx: RunContext, spark: SparkSession, test: DataFrame) -> dict[str, object]:
    """The fused fallback and both re-ranked versions, on the same test split; "merged" in
    the main lists is what is published (re-ranked, or fused when no ranker shipped)."""
    rank = ctx.outputs.rank
    ranker = read_json(rank.ranker)
    lists = {"fused": rank.fused("eval"), "reranked_fp32": rank.reranked_eval("fp32"),
             "reranked_int8": rank.reranked_eval("int8")}
    found = {name: evaluate.ranking_metrics(read(spark, path), test, EVAL_K)
             for name, path in lists.items() if path.exists()}
    return {"status": ranker.get("status"), "shipped": ranker.get("shipped", "fused"),
            "order": ranker.get("order", "fused"), "order_reason": ranker.get("order_reason"),
            "reason": ranker.get("reason"), "parity": ranker.get("parity"), "lists": found}


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    emb, rank, out = ctx.outputs.embeddings, ctx.outputs.rank, ctx.outputs.evaluate
    test = read(spark, emb.test).cache()
    catalog = read(spark, emb.items).count()
    lists = {
        "merged": read(spark, rank.recommendations("eval")),
        "popularity": read(spark, rank.popularity_baseline),
    }
    merged = read(spark, ctx.outputs.candidates.merged("eval"))
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
    metrics.update(read_json(ctx.outputs.candidates.recall))
    # A wall-clock time is no quality metric and differs between identical reruns; the
    # manifest's `index` field keeps it.
    index_info = read_json(ctx.outputs.index.info("eval"))
    metrics["index"] = {k: v for k, v in index_info.items() if k != "build_seconds"}
    metrics["fusion"] = read_json(ctx.outputs.candidates.fusion)
    metrics["reranker"] = reranker
    write_json(out.metrics, metrics)
    plots.metrics_figure(metrics, out.figure)
    return metrics
