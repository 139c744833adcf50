"""Stage `publish`: one versioned bundle, switched to atomically (see batch/publish/)."""

from __future__ import annotations

import datetime as dt
import logging
import shutil

from batch import feedback
from batch.context import RunContext, code_version, read_json
from batch.drift import store as drift_store
from batch.publish import bundle_writer, warehouse_build
from batch.publish.release import prune_runs
from shared.bundle import RUNS_DIR, IndexInfo, run_dir, verify_bundle, write_current
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
    BundleWriter(staging).finish(
        run_id=run_id,
        run_date=ctx.run_date.isoformat(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
        extra={"config": ctx.config.model_dump(), "gate": gate, "drift": drift},
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
    write_current(ctx.artifacts, run_id)
    log.info("published %s: CURRENT -> %s", final, run_id)
    if ctx.outputs.drift.profile.is_dir():  # published: a reference for the runs after it
        drift_store.keep_profile(ctx.artifacts, ctx.outputs.drift.profile, run_id,
                                 max(ctx.config.drift.keep_profiles, ctx.config.drift.window_runs))
    warehouse_build.rebuild(ctx.artifacts, run_id, ctx.outputs.validate.clean,
                            ctx.config.publish.attribution_window_minutes,
                            feedback.log_dir(ctx.config.events, ctx.artifacts))
    removed = prune_runs(ctx.artifacts, ctx.config.publish.keep_runs)
    return {"run_id": run_id, "bundle": str(final), "pruned": removed}


def _iso(epoch: object) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(int(str(epoch)), dt.UTC).isoformat()


