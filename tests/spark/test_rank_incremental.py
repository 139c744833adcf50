"""Incremental ranking (batch/ranker/incremental.py) on the tiny pipeline's real outputs:
a night where some users' candidates changed, some users are new and the rest are as the
previous run left them gives, incrementally, exactly the lists a full rescore gives, with
the unchanged users reused and the others rescored; anything run-wide that differs (the
model, the switch) rescores everyone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import functions as F

from batch.context import RunContext, RunOutputs, read_json, write_json
from batch.ranker import incremental
from batch.stages.outputs import work_dir
from shared import bundle_layout as layout
from shared.bundle import current_bundle, load_manifest, read_current
from tests.conftest import TINY_RUN_DATE, run_pipeline, tiny_config

pytestmark = pytest.mark.spark

TOP_K = 100
CHANGED_ITEMS, CHANGED_FEATURE, NEW = 4, 4, 3


def _published(pipeline_artifacts: Path) -> tuple[RunOutputs, bytes]:
    outputs = RunOutputs(work_dir(pipeline_artifacts, TINY_RUN_DATE.isoformat()))
    shipped = read_json(outputs.rank.ranker_spec)["model"]
    return outputs, (outputs.train_ranker.models / shipped).read_bytes()


def _ctx(artifacts: Path, run_id: str, **ranker: object) -> RunContext:
    """A run context of the next day writing to its own ART (validate's run id only)."""
    config = tiny_config(ranker=ranker) if ranker else tiny_config()
    ctx = RunContext(data_dir=artifacts, artifacts=artifacts,
                     run_date=TINY_RUN_DATE + dt.timedelta(days=1), config=config)  # type: ignore[arg-type]
    write_json(ctx.outputs.validate.stats, {"run_id": run_id})
    return ctx


def _lists(spark: Any, path: Path) -> pd.DataFrame:
    pdf = spark.read.parquet(str(path)).toPandas()
    pdf["sources"] = pdf["sources"].map(list)
    return pdf.sort_values(["user_idx", "rank"], ignore_index=True)


def test_first_run_scored_every_user_and_left_its_fingerprints(pipeline_artifacts: Path) -> None:
    outputs, model = _published(pipeline_artifacts)
    state = read_json(outputs.rank.incremental)
    assert state["mode"] == "full" and state["reason"] == "no previous published run"
    assert state["run_id"] == read_current(pipeline_artifacts)
    assert state["reused"] == 0 and state["rescored"] == state["users"] > 0
    assert state["run_key"] == incremental.run_key_parts(model, TOP_K)["run_key"]
    assert read_json(outputs.rank.ranker)["incremental"]["users"] == state["users"]


def test_incremental_equals_full_rescore_with_changed_new_and_unchanged_users(
    spark: Any, pipeline_artifacts: Path, tmp_path: Path
) -> None:
    outputs, model = _published(pipeline_artifacts)
    features_dir = outputs.features.arrays("full")
    candidates = spark.read.parquet(str(outputs.candidates.merged("full")))
    users = [r.user_idx for r in candidates.select("user_idx").distinct().orderBy("user_idx").collect()]
    n_changed = CHANGED_ITEMS + CHANGED_FEATURE
    drop_item, new_feature = users[:CHANGED_ITEMS], users[CHANGED_ITEMS:n_changed]
    new_users = users[n_changed:n_changed + NEW]

    # Yesterday's run: the published lists and fingerprints, minus the users new today.
    prev_ctx = _ctx(tmp_path / "prev", "yesterday")
    yesterday = incremental.rank_full(prev_ctx, spark, candidates, features_dir, model, TOP_K,
                                      None, "no previous published run")
    assert yesterday["mode"] == "full" and yesterday["users"] == len(users)
    prev_out = prev_ctx.outputs.rank
    fps = spark.read.parquet(str(prev_out.fingerprints)).where(~F.col("user_idx").isin(new_users))
    fps.write.parquet(str(tmp_path / "prev_fps"))
    state = read_json(prev_out.incremental)
    previous = incremental.Previous("yesterday", state, prev_out.reranked_full, tmp_path / "prev_fps")

    # Today's candidates: some users lost yesterday's first item, others have one candidate
    # whose popular-source score moved; everyone else's rows are unchanged.
    top1 = (spark.read.parquet(str(prev_out.reranked_full)).where(F.col("rank") == 1)
            .select("user_idx", F.col("item_idx").alias("top1")))
    first = candidates.groupBy("user_idx").agg(F.min("item_idx").alias("first"))
    today = (
        candidates.join(top1, "user_idx").join(first, "user_idx")
        .where(~(F.col("user_idx").isin(drop_item) & (F.col("item_idx") == F.col("top1"))))
        .withColumn("score_popular", F.when(
            F.col("user_idx").isin(new_feature) & (F.col("item_idx") == F.col("first")),
            F.coalesce(F.col("score_popular"), F.lit(0.0)) + 0.25,
        ).otherwise(F.col("score_popular")))
        .select(*candidates.columns)
    )

    inc_ctx = _ctx(tmp_path / "inc", "today")
    inc = incremental.rank_full(inc_ctx, spark, today, features_dir, model, TOP_K, previous, "")
    full_ctx = _ctx(tmp_path / "full", "today", incremental=False)
    full = incremental.rank_full(full_ctx, spark, today, features_dir, model, TOP_K, previous, "")

    assert inc["mode"] == "incremental" and full["mode"] == "full"
    assert full["reason"] == "ranker.incremental is false"
    assert inc["users"] == full["users"] == len(users)
    assert inc["rescored"] == n_changed + NEW and inc["reused"] == len(users) - n_changed - NEW
    assert inc["rescored_changed"] == n_changed and inc["rescored_new"] == NEW
    assert full["reused"] == 0 and full["rescored"] == len(users)
    mine, theirs = _lists(spark, inc_ctx.outputs.rank.reranked_full), _lists(spark, full_ctx.outputs.rank.reranked_full)
    assert len(mine) > len(users)
    pd.testing.assert_frame_equal(mine, theirs)  # same rows, same float32 scores, exactly
    # The changed users' lists really changed: reuse would have been wrong for them.
    before = _lists(spark, prev_out.reranked_full)
    for user in drop_item:
        assert (before[before.user_idx == user].item_idx.tolist()
                != mine[mine.user_idx == user].item_idx.tolist())
    # Both runs leave the same fingerprints for the next night.
    fp_inc = spark.read.parquet(str(inc_ctx.outputs.rank.fingerprints)).toPandas()
    fp_full = spark.read.parquet(str(full_ctx.outputs.rank.fingerprints)).toPandas()
    pd.testing.assert_frame_equal(fp_inc, fp_full)
    assert json.loads(inc_ctx.outputs.rank.incremental.read_text())["run_id"] == "today"


def test_a_different_model_rescores_everyone(spark: Any, pipeline_artifacts: Path,
                                             tmp_path: Path) -> None:
    outputs, model = _published(pipeline_artifacts)
    other = next(p for p in sorted(outputs.train_ranker.models.glob("*.onnx"))
                 if p.read_bytes() != model).read_bytes()
    ctx = _ctx(tmp_path / "other", "today")
    previous, why = incremental.find_previous(ctx, ctx.outputs.rank)
    assert previous is None and "no previous published run" in why  # a fresh ART
    # Yesterday = the published run of the tiny pipeline, found through its CURRENT.
    ctx = dataclasses.replace(ctx, artifacts=pipeline_artifacts)
    previous, why = incremental.find_previous(ctx, ctx.outputs.rank)
    assert previous is not None and why == "" and previous.run_id == read_current(pipeline_artifacts)
    ctx = _ctx(tmp_path / "other", "today")
    candidates = spark.read.parquet(str(outputs.candidates.merged("full")))
    got = incremental.rank_full(ctx, spark, candidates, outputs.features.arrays("full"), other,
                                TOP_K, previous, "")
    assert got["mode"] == "full" and got["reason"] == "model changed"
    assert got["reused"] == 0 and got["rescored"] == got["users"] > 0


def test_rerun_of_the_published_night_reuses_every_list_and_publishes_the_same_bundle(
    spark: Any, tiny_data: Path, pipeline_artifacts: Path, tmp_path: Path
) -> None:
    """The real pipeline again over the same date and data with its work kept (a retried
    night): rank reuses every user's list from the run it is replacing (copied aside
    before they are overwritten), and the bundle's list files are byte-identical."""
    artifacts = tmp_path / "art"
    shutil.copytree(pipeline_artifacts, artifacts)
    before = load_manifest(current_bundle(artifacts))
    results = run_pipeline(spark, tiny_data, artifacts)
    after = load_manifest(current_bundle(artifacts))
    assert after.run_id == before.run_id
    stats = results["rank"]["incremental"]
    assert isinstance(stats, dict) and stats["mode"] == "incremental", stats
    users = read_json(RunOutputs(work_dir(pipeline_artifacts, TINY_RUN_DATE.isoformat()))
                      .rank.incremental)["users"]
    assert stats["reused"] == users and stats["rescored"] == 0
    for name in (layout.RECOMMENDATIONS, *layout.REC_FILES):
        assert after.files[name] == before.files[name], name
    assert after.metrics == before.metrics
    assert after.extra["rank_incremental"]["reused"] == users
    rank = RunOutputs(work_dir(artifacts, TINY_RUN_DATE.isoformat())).rank
    assert not rank.previous_scratch.exists() and not rank.scored_scratch.exists()
