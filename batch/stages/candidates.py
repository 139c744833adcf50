"""Stage `candidates`: per-user candidates from every source, merged, and their recall."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import MODEL_VARIANTS, RANKER_VARIANT, RunContext, write_json
from batch.spark import candidates, evaluate, split
from batch.stages._spark import RECALL_CUTOFFS, read, train_for, user_regions, write


def _candidate_users(ctx: RunContext, spark: SparkSession, variant: str) -> DataFrame | None:
    """Whose candidates a variant needs: the published (full) variant every user's; the
    eval variant the evaluated users'; the ranker variant a sample of the users with labels
    in the ranker window, from which the training sample is drawn. None: everyone."""
    if variant == "eval":
        return read(spark, ctx.outputs.embeddings.test).select("user_idx").distinct()
    if variant == RANKER_VARIANT:
        labels = read(spark, ctx.outputs.embeddings.ranker_labels)
        return split.sample_users(labels, ctx.config.ranker.candidate_users, ctx.config.ranker.seed)
    return None


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    cfg = ctx.config.candidates
    regions = user_regions(ctx, spark)
    emb, out = ctx.outputs.embeddings, ctx.outputs.candidates
    report: dict[str, object] = {}
    item_ids = pq.read_table(emb.items, columns=["item_idx"]).column(0)
    n_items = int(pc.max(item_ids).as_py() or 0) + 1
    for variant in MODEL_VARIANTS:
        train = train_for(ctx, spark, variant).cache()
        user_vectors = read(spark, emb.user_factors(variant))
        # Popular lists and item neighbours come from every user's history; the per-user
        # sources only run for the users this variant needs.
        scope = _candidate_users(ctx, spark, variant)
        users_train = train if scope is None else train.join(F.broadcast(scope), "user_idx")
        popular = candidates.popular_lists(train, regions, cfg, max(cfg.popular_k, ctx.config.publish.top_k))
        write(popular.orderBy("segment", "rank"), out.popular(variant))
        neighbors = candidates.item_neighbors(train, cfg)
        write(neighbors.orderBy("item_idx", "neighbor_idx"), out.neighbors(variant))
        train.unpersist()
        tables = candidates.source_tables(out.neighbors(variant), out.popular(variant), n_items)
        merged = candidates.user_candidates(
            spark, users_train, user_vectors, regions, tables,
            ctx.outputs.index.index(variant), cfg,
        )
        # Already sorted by (user, item) within each partition: written as is, no global sort.
        merged.write.mode("overwrite").parquet(str(out.merged(variant)))
    merged = read(spark, out.merged("eval"))
    test = read(spark, emb.test)
    recall: dict[str, dict[str, float]] = {}
    for source in candidates.SOURCES:
        got = evaluate.candidate_recall(merged, f"rank_{source}", test, RECALL_CUTOFFS)
        recall[source] = {f"recall@{n}": v for n, v in got.items()}
    fused_rank = evaluate.rank_lists(merged, "fused_score", max(RECALL_CUTOFFS))
    got = evaluate.candidate_recall(fused_rank, "rank", test, RECALL_CUTOFFS)
    recall["merged"] = {f"recall@{n}": v for n, v in got.items()}
    report["candidate_recall"] = recall
    write_json(out.recall, report)
    return report
