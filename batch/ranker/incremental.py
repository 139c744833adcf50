"""Incremental ranking of the published (`full`) variant: reuse a user's list from the last
published run when nothing that decides it changed, score the others.

Reuse needs both: the run key (batch/ranker/fingerprint.run_key: shipped model bytes,
top_k, feature list, fingerprint version, ONNX Runtime version) equal to the one the
previous run recorded, and the user's fingerprint of its model inputs (items, source bits,
every float32 feature, in order) equal to its previous one. The fingerprints are computed
in the scoring tasks from the features they build anyway, so a reused user costs its
features but not the model call nor the top-k.

"The previous run" is CURRENT's: its manifest names its date, and that date's work
directory holds its rank outputs (`rank/full/reranked.parquet`, `fingerprints.parquet`,
`incremental.json`). `incremental.json` records the run id that wrote them; when it is not
CURRENT's (the date was rerun and refused since, or pruned) nothing is reused.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext, RunOutputs, read_json, write_json
from batch.ranker.batch_scoring import REUSED_RANK, fingerprinted_lists, sources_list
from batch.ranker.fingerprint import FINGERPRINT_VERSION, run_key
from batch.stages.outputs import RankOutputs, work_dir
from shared.bundle import current_bundle, load_manifest, read_current
from shared.errors import BundleError
from shared.features import FEATURE_NAMES

log = logging.getLogger(__name__)
FORCE_ENV = "RECSYS_RANK_FULL_RESCORE"  # "1": rescore everyone without changing the config
LIST_COLUMNS = ("user_idx", "item_idx", "score", "rank", "sources")


@dataclass(frozen=True)
class Previous:
    """The last published run's rank outputs that may be reused."""

    run_id: str
    state: dict[str, object]
    lists: Path
    fingerprints: Path


def run_key_parts(model: bytes, top_k: int) -> dict[str, object]:
    """What run_key hashes, kept readable in incremental.json so a mismatch says which."""
    import hashlib

    import onnxruntime

    return {"fingerprint_version": FINGERPRINT_VERSION, "top_k": top_k,
            "features": list(FEATURE_NAMES), "onnxruntime": onnxruntime.__version__,
            "model_sha256": hashlib.sha256(model).hexdigest(),
            "run_key": run_key(model, top_k, FEATURE_NAMES, onnxruntime.__version__)}


def forced_full(ctx: RunContext) -> str | None:
    """Why every user is rescored whatever the previous run, or None."""
    if not ctx.config.ranker.incremental:
        return "ranker.incremental is false"
    if os.environ.get(FORCE_ENV, "") not in ("", "0"):
        return f"{FORCE_ENV} is set"
    return None


def find_previous(ctx: RunContext, out: RankOutputs) -> tuple[Previous | None, str]:
    """CURRENT's rank outputs, or None and why not. Called before this run replaces its own
    outputs: when CURRENT's date is this run's, they are copied aside first."""
    run_id = read_current(ctx.artifacts)
    if run_id is None:
        return None, "no previous published run"
    try:
        manifest = load_manifest(current_bundle(ctx.artifacts))
    except BundleError as exc:
        return None, f"previous run {run_id}: {exc}"
    theirs = RunOutputs(work_dir(ctx.artifacts, manifest.run_date)).rank
    if not theirs.incremental.exists():
        return None, (f"previous run {run_id} left no fingerprints in "
                      f"{theirs.incremental.parent} (pruned, or written by older code)")
    state = read_json(theirs.incremental)
    if state.get("run_id") != run_id:
        return None, (f"the rank outputs of {manifest.run_date} are run {state.get('run_id')}'s, "
                      f"not the published {run_id}'s")
    lists, fingerprints = theirs.reranked_full, theirs.fingerprints
    if not (lists.exists() and fingerprints.exists()):
        return None, f"previous run {run_id}'s lists or fingerprints are missing"
    if theirs.root == out.root:  # a rerun of CURRENT's date: this run overwrites them
        shutil.rmtree(out.previous_scratch, ignore_errors=True)
        out.previous_scratch.mkdir(parents=True)
        lists = Path(shutil.copytree(lists, out.previous_scratch / "reranked.parquet"))
        fingerprints = Path(shutil.copytree(fingerprints,
                                            out.previous_scratch / "fingerprints.parquet"))
    return Previous(run_id, state, lists, fingerprints), ""


def key_change(previous: dict[str, object], current: dict[str, object]) -> str | None:
    """Which part of the run key differs (the first, in the order a reader checks), or None."""
    if previous.get("run_key") == current["run_key"]:
        return None
    for part, what in (("fingerprint_version", "fingerprint version changed"),
                       ("features", "feature schema changed"), ("top_k", "top_k changed"),
                       ("onnxruntime", "onnxruntime version changed"),
                       ("model_sha256", "model changed")):
        if previous.get(part) != current[part]:
            return what
    return "run key changed"


def rank_full(ctx: RunContext, spark: SparkSession, full: DataFrame, features_dir: Path,
              model: bytes, top_k: int, previous: Previous | None,
              no_previous_reason: str) -> dict[str, object]:
    """Write rank/full/reranked.parquet, fingerprints.parquet and incremental.json; return
    the stats (mode, users, reused, rescored, why)."""
    out = ctx.outputs.rank
    started = time.perf_counter()
    parts = run_key_parts(model, top_k)
    forced = forced_full(ctx)
    reason = forced or no_previous_reason
    if previous is not None and forced is None:
        reason = key_change(previous.state, parts) or ""
    reusable = previous is not None and forced is None and reason == ""
    prev_fps = spark.read.parquet(str(previous.fingerprints)) if reusable else None  # type: ignore[union-attr]

    raw = fingerprinted_lists(full, features_dir, model, ctx.config.shuffle_partitions,
                              top_k, prev_fps)
    raw.write.mode("overwrite").parquet(str(out.scored_scratch))
    raw = spark.read.parquet(str(out.scored_scratch))
    # Every user has exactly one row at rank <= 1: its first item, or its reuse marker.
    fps = raw.where(F.col("rank") <= 1).select("user_idx", "fp_hi", "fp_lo")
    fps.orderBy("user_idx").coalesce(1).write.mode("overwrite").parquet(str(out.fingerprints))
    fps = spark.read.parquet(str(out.fingerprints))
    fresh = raw.where(F.col("rank") > REUSED_RANK).select(
        "user_idx", "item_idx", "score", "rank", sources_list().alias("sources"))
    lists = fresh
    reused_users = 0
    new_users = 0
    if reusable:
        reused = raw.where(F.col("rank") == REUSED_RANK).select("user_idx")
        reused_users = reused.count()
        old = spark.read.parquet(str(previous.lists)).join(reused, "user_idx", "left_semi")  # type: ignore[union-attr]
        lists = fresh.unionByName(old.select(*LIST_COLUMNS))
        new_users = fps.join(prev_fps, "user_idx", "left_anti").count()  # type: ignore[arg-type]
    lists.orderBy("user_idx", "rank").coalesce(4).write.mode("overwrite").parquet(
        str(out.reranked_full))
    users = fps.count()
    shutil.rmtree(out.scored_scratch, ignore_errors=True)
    shutil.rmtree(out.previous_scratch, ignore_errors=True)
    rescored = users - reused_users
    if reusable:
        reason = (f"{rescored - new_users} users' inputs changed, {new_users} users new "
                  f"since {previous.run_id}")  # type: ignore[union-attr]
    stats: dict[str, object] = {
        "mode": "incremental" if reusable else "full", "reason": reason,
        "previous_run": previous.run_id if previous is not None else None,
        "users": users, "reused": reused_users, "rescored": rescored,
        "rescored_changed": rescored - new_users if reusable else None,
        "rescored_new": new_users if reusable else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    run_id = str(read_json(ctx.outputs.validate.stats)["run_id"])
    # Written last: a run that fails above leaves no state, so nothing is reused from it.
    write_json(out.incremental, {**parts, **stats, "run_id": run_id})
    log.info("rank: %s: %d users reused, %d rescored (%s)", stats["mode"], reused_users,
             rescored, reason)
    return stats
