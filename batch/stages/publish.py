"""Stage `publish`: one versioned bundle, switched to atomically (see batch/publish/), or
started as a canary rollout beside CURRENT with `publish.mode: canary`."""

from __future__ import annotations

import datetime as dt
import logging
import shutil

from batch import feedback
from batch.context import RunContext, code_version, read_json
from batch.drift import store as drift_store
from batch.publish import bundle_writer, warehouse_build
from batch.publish.release import prune_runs
from shared import rollout
from shared.bundle import RUNS_DIR, IndexInfo, read_current, run_dir, verify_bundle, write_current
from shared.bundle_writer import BundleWriter
from shared.errors import BundleError
from shared.privacy import load_key

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict[str, object]:
    stats = read_json(ctx.outputs.validate.stats)
    run_id = str(stats["run_id"])
    gate = read_json(ctx.outputs.gate.decision)
    if not gate.get("passed"):
        raise BundleError(f"run {run_id} did not pass the quality gate: {gate.get('reasons')}")
    # The warehouse rebuilt after the switch needs the pseudonymisation key: fail now, while
    # the previous run still serves, rather than publish a bundle analysts cannot query.
    load_key(ctx.artifacts)
    runs = ctx.artifacts / RUNS_DIR
    staging = runs / f".staging-{run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    row_counts = bundle_writer.assemble(ctx, staging)
    row_counts["interactions_clean"] = int(stats["rows_clean"])
    metrics = read_json(ctx.outputs.evaluate.metrics)
    index_info = read_json(ctx.outputs.index.info("full"))
    window = stats["data_window"]
    # The drift checks' values, thresholds and verdicts ride in the manifest: whoever reads a
    # bundle sees what its input looked like against the runs before it.
    drift = read_json(ctx.outputs.drift.report)
    ranker = read_json(ctx.outputs.rank.ranker) if ctx.outputs.rank.ranker.exists() else {}
    now = dt.datetime.now(dt.UTC)
    extra: dict[str, object] = {"config": ctx.config.model_dump(), "gate": gate, "drift": drift,
                                "freshness": freshness(window.get("max_ts"), drift, now)}
    if ranker.get("feature_stats"):  # monitoring/feature_stats.json and its checks' summary
        extra["feature_stats"] = ranker["feature_stats"]
    if ranker.get("incremental"):  # users whose list was reused from the previous run / scored
        extra["rank_incremental"] = ranker["incremental"]
    # Which BLAS ALS ran on (batch/spark/blas.py): a slow night explains itself.
    embeddings = read_json(ctx.outputs.embeddings.stats)
    extra["blas"] = embeddings.get("blas")
    # Which ALS engine fitted each variant, why, and how long it took (batch/spark/als.py).
    extra["als"] = embeddings.get("als")
    BundleWriter(staging).finish(
        run_id=run_id,
        run_date=ctx.run_date.isoformat(),
        created_at=now.isoformat(timespec="seconds"),
        code_version=code_version(),
        config_fingerprint=ctx.config.fingerprint(),
        data_window={
            "min": _iso(window["min_ts"]),
            "max": _iso(window["max_ts"]),
            "end_exclusive": _iso(ctx.run_end_epoch),
        },
        row_counts=row_counts,
        metrics=metrics,
        index=IndexInfo(**index_info),
        extra=extra,
    )
    verify_bundle(staging)
    final = run_dir(ctx.artifacts, run_id)
    if final.exists():  # an unchanged rerun of the same date: replace it in one rename
        trash = runs / f".trash-{run_id}"
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        staging.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(final)
    served = switch_or_canary(ctx, run_id)
    log.info("published %s: CURRENT -> %s", final, served)
    if ctx.outputs.drift.profile.is_dir():  # published: a reference for the runs after it
        drift_store.keep_profile(ctx.artifacts, ctx.outputs.drift.profile, run_id,
                                 max(ctx.config.drift.keep_profiles, ctx.config.drift.window_runs))
    warehouse_build.rebuild(ctx.artifacts, served, ctx.outputs.validate.clean,
                            ctx.config.publish.attribution_window_minutes,
                            feedback.log_dir(ctx.config.events, ctx.artifacts))
    removed = prune_runs(ctx.artifacts, ctx.config.publish.keep_runs)
    return {"run_id": run_id, "bundle": str(final), "pruned": removed, "current": served,
            "canary": run_id if served != run_id else None}


def switch_or_canary(ctx: RunContext, run_id: str) -> str:
    """publish.mode: switch CURRENT to the run (`switch`), or start its canary rollout at
    publish.canary_share (`canary`; docs/experiments.md), superseding a canary still running
    from an earlier night: tonight's run is the one to judge. The first run ever, with no
    CURRENT to compare against, and a rerun of the live run switch directly. Returns the
    run CURRENT serves afterwards."""
    live = read_current(ctx.artifacts)
    if ctx.config.publish.mode == "switch" or live is None or live == run_id:
        write_current(ctx.artifacts, run_id)
        return run_id
    with rollout.lock(ctx.artifacts):
        previous = rollout.current(ctx.artifacts)
        if previous is not None:
            rollout.stop(ctx.artifacts, previous, "aborted",
                         f"superseded by the canary of run {run_id}", who="publish")  # fmt: skip
    rollout.start(ctx.artifacts, run_id, ctx.config.publish.canary_share, who="publish")
    return live


def freshness(newest_ts: object, drift: dict[str, object], now: dt.datetime) -> dict[str, object]:
    """How fresh the bundle's input was: the newest valid event, its age when the run's
    drift stage ran (its `input_age_at_run_hours` check) and when the bundle was published
    (`published_at`, also the manifest's `created_at`; the service's
    recsys_bundle_age_seconds counts from it)."""
    at_run = next((c.get("value") for c in drift.get("checks", [])  # type: ignore[attr-defined]
                   if c.get("check") == "input_age_at_run_hours"), None)
    newest = None if newest_ts is None else int(str(newest_ts))
    return {
        "newest_event_at": _iso(newest) or None,
        "newest_event_age_at_run_seconds": None if at_run is None else round(float(at_run) * 3600),
        "newest_event_age_at_publish_seconds":
            None if newest is None else round(now.timestamp() - newest),
        "published_at": now.isoformat(timespec="seconds"),
    }


def _iso(epoch: object) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(int(str(epoch)), dt.UTC).isoformat()


