"""Stage `rank`: the published lists (re-ranked, or fused when no ranker ships) and the popularity baseline."""

from __future__ import annotations

import shutil

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch.context import VARIANTS, RunContext, read_json, write_json
from batch.ranker.rerank import rerank
from batch.spark import candidates, evaluate
from batch.stages._spark import EVAL_K, read, train_for, write
from shared.bundle import GLOBAL_SEGMENT


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    """Ranked lists per user from the merged candidates: the learned re-ranker's order
    (batch/ranker/rerank.py) when one was trained and it is not worse than the fused order
    on the evaluation split (rerank.choose_order), else the fused order, which is always
    kept (fused.parquet) as the fallback and evaluated; plus the popularity baseline
    (global popular, unseen) for evaluation. The fused order is the candidates' fused_score,
    which the candidates stage wrote with the tuned weights (candidates/fusion.json)."""
    emb, cands, out = ctx.outputs.embeddings, ctx.outputs.candidates, ctx.outputs.rank
    top_k = ctx.config.publish.top_k
    weights = read_json(cands.fusion)["weights"]

    def write_fused(variant: str) -> str:
        merged = read(spark, cands.merged(variant))
        lists = evaluate.rank_lists(merged, "fused_score", top_k).join(
            merged.select("user_idx", "item_idx", "sources"), ["user_idx", "item_idx"]
        )
        write(lists.orderBy("user_idx", "rank"), out.fused(variant), 4)
        return str(out.fused(variant))

    write_fused("eval")  # always: evaluated beside the re-ranked lists
    ranker = rerank(ctx, spark, top_k)
    write_json(out.ranker, ranker)
    for variant in VARIANTS:
        chosen = ranker.get("lists", {}).get(variant)  # type: ignore[attr-defined]
        if chosen is None:  # no re-ranked lists: the fused order is what ships
            chosen = str(out.fused(variant)) if variant == "eval" else write_fused(variant)
        elif variant != "eval":  # the published variant's fused order would go unused
            shutil.rmtree(out.fused(variant), ignore_errors=True)
        # Both kinds of list are written sorted by (user, rank): a copy, not a re-sort.
        target = out.recommendations(variant)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(chosen, target)
    # Popularity baseline: the global list, minus what each test user has seen.
    train = train_for(ctx, spark, "eval")
    test_users = read(spark, emb.test).select("user_idx").distinct()
    popular = read(spark, cands.popular("eval")).where(
        F.col("segment") == GLOBAL_SEGMENT
    )
    baseline = (
        test_users.crossJoin(popular.select("item_idx", "score"))
        .join(candidates.seen_items(train), ["user_idx", "item_idx"], "left_anti")
    )
    write(evaluate.rank_lists(baseline, "score", EVAL_K).orderBy("user_idx", "rank"),
          out.popularity_baseline)
    # Users whose published list came from the previous run vs were scored (and why).
    inc = ranker.get("incremental") or {}
    return {"top_k": top_k, "fusion_weights": weights, "ranker": ranker.get("status"),
            "incremental": {k: inc.get(k) for k in ("mode", "reused", "rescored", "reason",
                                                    "seconds")} if inc else None}
