"""Stage `candidates`: per-user candidates from every source, merged and fused, and their recall.

The fusion weights are tuned here, once (shared/fusion.py): the eval variant's candidates
come first, with the configured weights; the weights are tuned on them against the test
split and recorded in `candidates/fusion.json`; every variant's fused_score is then the
tuned one (the eval variant's rewritten if tuning moved the weights). Everything after
this stage (the fused lists, the recall below, the bundle's candidates) reads that score.

EASE first (batch/spark/ease.py): λ is tuned on the ranker window (unless configured),
then each variant's weights are fitted on that variant's training data just before its
candidates are built, and dropped from memory after; `candidates/ease.json` says how.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import MODEL_VARIANTS, RANKER_VARIANT, RunContext, write_json
from batch.spark import candidates, evaluate, fusion, split
from batch.spark import ease as ease_model
from batch.stages._spark import RECALL_CUTOFFS, read, train_for, user_regions, write
from batch.stages.outputs import FULL
from shared.events import DISLIKE
from shared.fusion import weight_vector
from shared.sources import RANK_COLUMNS, SOURCES

TUNED_ON = "eval"  # the variant whose candidates the weights are tuned on


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


class _Ease:
    """EASE's λ for this run and each variant's weights, fitted when asked for."""

    def __init__(self, ctx: RunContext, spark: SparkSession, n_items: int) -> None:
        self.ctx, self.spark, self.n_items = ctx, spark, n_items
        self.info: dict[str, object] = {"variants": {}}
        cfg = ctx.config.candidates
        self.lam = cfg.ease_lambda
        self._tuned: np.ndarray | None = None  # the ranker variant's weights, if tuned
        if self.lam is None:
            emb = ctx.outputs.embeddings
            model = self._fit_gram(RANKER_VARIANT)
            tuned = ease_model.tune(model, read(spark, emb.ranker_train),
                                    read(spark, emb.ranker_labels), n_items,
                                    cfg.ease_lambda_grid, cfg.ease_tune_users, ctx.config.ranker.seed)
            self.lam, self._tuned = tuned.lam, tuned.weights
            self.info["tuned_on"] = "ranker window (ranker_train -> ranker_labels)"
            self.info["ndcg@10_by_lambda"] = {str(k): v for k, v in tuned.by_lambda.items()}
            self._save(RANKER_VARIANT, model, tuned.weights)
        self.info["lambda"] = self.lam

    def _fit_gram(self, variant: str) -> ease_model.EaseModel:
        cfg = self.ctx.config.candidates
        return ease_model.fit_gram(self.spark, read(self.spark, self.ctx.outputs.embeddings.train_for(variant)),
                                   self.n_items, cfg.ease_max_items, cfg.ease_min_count)

    def _save(self, variant: str, model: ease_model.EaseModel, weights: np.ndarray) -> None:
        out = self.ctx.outputs.candidates
        ease_model.save(weights, model.items, out.ease_weights(variant), out.ease_items(variant))
        self.info["variants"][variant] = {  # type: ignore[index]
            "items": int(model.items.size), "interaction_share": model.interaction_share,
            "matrix_bytes": int(weights.nbytes), **model.timings}

    def paths(self, variant: str) -> tuple[Path, Path]:
        """The variant's weights and items files, fitted now unless the tuning left them."""
        out = self.ctx.outputs.candidates
        if not (variant == RANKER_VARIANT and self._tuned is not None):
            assert self.lam is not None
            model = self._fit_gram(variant)
            weights = ease_model.solve(model, self.lam)
            self._save(variant, model, weights)
            del weights, model
        return out.ease_weights(variant), out.ease_items(variant)


def _write_candidates(ctx: RunContext, spark: SparkSession, variant: str, n_items: int,
                      weights: dict[str, float], ease: _Ease) -> Path:
    cfg = ctx.config.candidates
    out = ctx.outputs.candidates
    regions = user_regions(ctx, spark)
    train = train_for(ctx, spark, variant).cache()
    user_vectors = read(spark, ctx.outputs.embeddings.user_factors(variant))
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
        ctx.outputs.index.index(variant), cfg, weights, ease.paths(variant),
    )
    if variant == FULL:
        # The published lists never offer what the user disliked (the event log's
        # `dislike`): it leaves the candidates, so every list built from them, here.
        # The other variants keep theirs: the ranker learns from them as negatives.
        disliked = read(spark, ctx.outputs.embeddings.explicit_negatives) \
            .where(F.col("event_type") == DISLIKE).select("user_idx", "item_idx")
        merged = merged.join(disliked, ["user_idx", "item_idx"], "left_anti") \
            .sortWithinPartitions("user_idx", "item_idx")
    # Sorted by (user, item) within each partition: written as is, no global sort.
    merged.write.mode("overwrite").parquet(str(out.merged(variant)))
    return out.merged(variant)


def _rewrite_fused(spark: SparkSession, path: Path, weights: dict[str, float]) -> None:
    """Rewrite fused_score in the candidates at `path` with these weights (still sorted by
    user and item within each file)."""
    tmp = path.with_name(path.name + ".tmp")
    fusion.with_fused_score(spark.read.parquet(str(path)), weights) \
        .sortWithinPartitions("user_idx", "item_idx").write.mode("overwrite").parquet(str(tmp))
    shutil.rmtree(path)
    tmp.rename(path)


def _without_timings(info: dict[str, object]) -> dict[str, object]:
    """EASE's info for the metrics: a wall-clock time is no quality metric and differs
    between identical reruns (candidates/ease.json keeps the times)."""
    variants = info.get("variants", {})
    assert isinstance(variants, dict)
    return {**info, "variants": {v: {k: x for k, x in d.items() if not k.endswith("_seconds")}
                                 for v, d in variants.items()}}


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    out = ctx.outputs.candidates
    item_ids = pq.read_table(ctx.outputs.embeddings.items, columns=["item_idx"]).column(0)
    n_items = int(pc.max(item_ids).as_py() or 0) + 1
    configured = dict(ctx.config.candidates.source_weights)
    test = read(spark, ctx.outputs.embeddings.test)
    ease = _Ease(ctx, spark, n_items)
    path = _write_candidates(ctx, spark, TUNED_ON, n_items, configured, ease)
    weights, tuned_ndcg = fusion.tune_weights(spark.read.parquet(str(path)), test, configured)
    write_json(out.fusion, {"weights": weights, "sample_ndcg@10": tuned_ndcg})
    if not np.array_equal(weight_vector(weights), weight_vector(configured)):
        _rewrite_fused(spark, path, weights)
    for variant in MODEL_VARIANTS:
        if variant != TUNED_ON:
            _write_candidates(ctx, spark, variant, n_items, weights, ease)
    write_json(out.ease, ease.info)

    merged = read(spark, out.merged(TUNED_ON))
    recall: dict[str, dict[str, float]] = {}
    for source, rank in zip(SOURCES, RANK_COLUMNS, strict=True):
        got = evaluate.candidate_recall(merged, rank, test, RECALL_CUTOFFS)
        recall[source] = {f"recall@{n}": v for n, v in got.items()}
    fused_rank = evaluate.rank_lists(merged, "fused_score", max(RECALL_CUTOFFS))
    got = evaluate.candidate_recall(fused_rank, "rank", test, RECALL_CUTOFFS)
    recall["merged"] = {f"recall@{n}": v for n, v in got.items()}
    report: dict[str, object] = {"candidate_recall": recall, "ease": _without_timings(ease.info)}
    write_json(out.recall, report)
    return {**report, "fusion_weights": weights}
