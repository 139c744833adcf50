"""The re-ranked lists of the rank stage, and the fp32/int8 parity gate.

The eval variant's candidates are scored by both the fp32 and the int8 model (features from
the eval variant's arrays); int8 ships when its nDCG@10 on the evaluation split is within
`ranker.parity_tolerance` (relative) of fp32's, else fp32 ships and the spec says why. The
full variant's candidates, the published lists, are then scored by the shipped model only.
The ranker never saw the evaluation split: it was trained one window earlier (see
docs/reranker.md), so choosing fp32 vs int8 on it, and then the re-ranked vs the fused order
(`choose_order`: lists never worse than their own input), are the only uses of those labels
here. The spec says which order the lists have (`"lists": "reranked" | "fused"`, and why).
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext, read_json, write_json
from batch.ranker import feature_stats, incremental
from batch.ranker.batch_scoring import score_candidates
from batch.ranker.model import FP32, INPUT_NAME, INT8, OUTPUT_NAME, spearman
from batch.spark import evaluate
from shared.features import FEATURE_NAMES

log = logging.getLogger(__name__)
PARITY_SAMPLE_USERS = 2000
EVAL_K = 10


def _lists(scored: DataFrame, column: str, merged: DataFrame, top_k: int) -> DataFrame:
    return evaluate.rank_lists(scored, column, top_k).join(
        merged.select("user_idx", "item_idx", "sources"), ["user_idx", "item_idx"]
    )


def _spearman(scored: DataFrame) -> dict[str, float]:
    """Global and mean per-user rank correlation of int8 vs fp32 scores on sampled users."""
    users = (scored.select("user_idx").distinct().withColumn("h", F.xxhash64("user_idx"))
             .orderBy("h", "user_idx").limit(PARITY_SAMPLE_USERS).select("user_idx"))
    pdf = scored.join(users, "user_idx").toPandas()  # bounded: a sample of users
    # Row order from a join is not fixed; ties must break the same way on every rerun.
    pdf = pdf.sort_values(["user_idx", "item_idx"], ignore_index=True)
    if pdf.empty:
        return {"spearman": 1.0, "spearman_per_user_mean": 1.0, "sampled_rows": 0}
    per_user = [spearman(g["score_int8"].to_numpy(), g["score_fp32"].to_numpy())
                for _, g in pdf.groupby("user_idx") if len(g) > 1]
    return {
        "spearman": spearman(pdf["score_int8"].to_numpy(), pdf["score_fp32"].to_numpy()),
        "spearman_per_user_mean": float(np.nanmean(per_user)) if per_user else 1.0,
        "max_abs_diff": float(np.max(np.abs(pdf["score_int8"] - pdf["score_fp32"]))),
        "sampled_rows": len(pdf),
    }


def choose_order(reranked: dict[str, float], fused: dict[str, float] | None,
                 metric: str = "ndcg@10") -> tuple[str, str]:
    """("reranked" | "fused", why): the re-ranked order unless the fused order it reorders
    is better on the evaluation split (a tie keeps the re-ranked one)."""
    if fused is None:
        return "reranked", "no fused lists to compare with"
    ours, theirs = float(reranked[metric]), float(fused[metric])
    if ours >= theirs:
        return "reranked", f"re-ranked {metric} {ours:.4f} >= fused {theirs:.4f}"
    return "fused", f"re-ranked {metric} {ours:.4f} < fused {theirs:.4f} on the evaluation split"


def rerank(ctx: RunContext, spark: SparkSession, top_k: int) -> dict[str, object]:
    """Write rank/<variant>/reranked*.parquet and rank/ranker_spec.json; return the summary
    with the paths of the lists to publish, or the reason the fused order stays."""
    cfg = ctx.config.ranker
    trained, features, out = ctx.outputs.train_ranker, ctx.outputs.features, ctx.outputs.rank
    report = read_json(trained.report)
    spec_path = out.ranker_spec
    # Before anything of this run's is replaced: a rerun of CURRENT's date reuses from the
    # very files it overwrites below (incremental.find_previous copies them aside).
    previous, no_previous = ((None, forced) if (forced := incremental.forced_full(ctx))
                             else incremental.find_previous(ctx, out))
    spec_path.unlink(missing_ok=True)
    out.feature_stats.unlink(missing_ok=True)
    out.incremental.unlink(missing_ok=True)
    for stale in (out.reranked_eval("fp32"), out.reranked_eval("int8"), out.reranked_full,
                  out.fingerprints):
        shutil.rmtree(stale, ignore_errors=True)  # never publish a previous run's lists
    if report.get("status") != "trained" or report.get("features") != list(FEATURE_NAMES):
        shutil.rmtree(out.previous_scratch, ignore_errors=True)  # nothing is scored: unused
    if report.get("status") != "trained":
        return {"status": report.get("status"), "reason": report.get("reason", "")}
    if report.get("features") != list(FEATURE_NAMES):
        return {"status": "stale", "reason": "the trained model's features differ from shared.features"}
    blobs = {"fp32": (trained.models / FP32).read_bytes(), "int8": (trained.models / INT8).read_bytes()}
    parts = ctx.config.shuffle_partitions

    merged = spark.read.parquet(str(ctx.outputs.candidates.merged("eval")))
    scored = score_candidates(merged, features.arrays("eval"), blobs, parts)
    scored.write.mode("overwrite").parquet(str(out.scores))
    scored = spark.read.parquet(str(out.scores))
    test = spark.read.parquet(str(ctx.outputs.embeddings.test))
    quality = {}
    for name in ("fp32", "int8"):
        lists = _lists(scored, f"score_{name}", merged, top_k)
        lists.orderBy("user_idx", "rank").coalesce(4).write.mode("overwrite").parquet(
            str(out.reranked_eval(name)))
        quality[name] = evaluate.ranking_metrics(
            spark.read.parquet(str(out.reranked_eval(name))), test, EVAL_K)
    fp32_ndcg, int8_ndcg = quality["fp32"]["ndcg@10"], quality["int8"]["ndcg@10"]
    relative_drop = (fp32_ndcg - int8_ndcg) / fp32_ndcg if fp32_ndcg > 0 else 0.0
    passed = relative_drop <= cfg.parity_tolerance
    shipped = "int8" if passed and cfg.prefer_int8 else "fp32"
    why = (None if shipped == "int8" else
           "int8 not preferred (ranker.prefer_int8=false)" if passed else
           f"int8 nDCG@10 {int8_ndcg:.4f} is {relative_drop:.2%} below fp32 {fp32_ndcg:.4f}, "
           f"over the {cfg.parity_tolerance:.0%} tolerance")
    parity = {"ndcg@10_fp32": fp32_ndcg, "ndcg@10_int8": int8_ndcg,
              "relative_drop": relative_drop, "tolerance": cfg.parity_tolerance,
              "passed": passed, "int8_method": report["int8_method"], **_spearman(scored)}

    fused_path = out.fused("eval")
    fused_quality = (evaluate.ranking_metrics(spark.read.parquet(str(fused_path)), test, EVAL_K)
                     if fused_path.exists() else None)
    order, order_reason = choose_order(quality[shipped], fused_quality)
    log.info("ranker: lists in %s order (%s)", order, order_reason)

    full = spark.read.parquet(str(ctx.outputs.candidates.merged("full")))
    # Every user: the top k is picked inside the scoring tasks (no shuffle of all scored
    # rows); a user whose model inputs are those of the previous published run keeps its
    # list from there, unscored (batch/ranker/incremental.py).
    incremental_stats = incremental.rank_full(ctx, spark, full, features.arrays("full"),
                                              blobs[shipped], top_k, previous, no_previous)
    spec = {
        "model": FP32 if shipped == "fp32" else INT8, "input": INPUT_NAME, "output": OUTPUT_NAME,
        "features": list(FEATURE_NAMES), "parity": parity, "shipped": shipped,
        "fp32_reason": why, "lists": order, "lists_reason": order_reason,
        # With "lists": "fused" the service ranks by the same fused order (online/scoring.py).
        "fusion_weights": read_json(ctx.outputs.candidates.fusion)["weights"], "training": {k: v for k, v in dict(report["training"]).items()
                                         if k != "train_seconds"},
    }
    write_json(spec_path, spec)
    run_id = str(read_json(ctx.outputs.validate.stats)["run_id"])
    stats = feature_stats.write(ctx, run_id, blobs[shipped], full)
    log.info("ranker: feature stats of %d training and %d candidate rows, %d drift warnings",
             stats["training_rows"], stats["candidate_rows"], len(stats["warnings"]))
    log.info("ranker: shipping %s (nDCG@10 fp32 %.4f, int8 %.4f)", shipped, fp32_ndcg, int8_ndcg)
    lists = ({"eval": str(out.reranked_eval(shipped)), "full": str(out.reranked_full)}
             if order == "reranked" else {})  # none: the rank stage publishes the fused order
    return {"status": "reranked", "shipped": shipped, "parity": parity, "quality": quality,
            "fused_quality": fused_quality, "order": order, "order_reason": order_reason,
            "lists": lists, "feature_stats": stats, "incremental": incremental_stats}
