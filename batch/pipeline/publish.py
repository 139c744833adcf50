"""Stage 9: publish one versioned bundle atomically, keep the last N, and roll back.

The bundle is assembled in a staging directory, its manifest written with the checksum
of every file, then renamed into `runs/<run_id>`; only then does CURRENT switch (an
atomic rename). A crash at any point leaves the previous CURRENT serving.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

from batch.pipeline import bundle_writer, warehouse_build
from batch.pipeline.context import RunContext, code_version, read_json
from shared.bundle import (
    MANIFEST_FILE,
    RUNS_DIR,
    BundleManifest,
    IndexInfo,
    checksum_tree,
    read_current,
    run_dir,
    verify_bundle,
    write_current,
)
from shared.errors import BundleError
from shared.privacy import load_key

log = logging.getLogger(__name__)


def stage_publish(ctx: RunContext) -> dict[str, object]:
    stats = read_json(ctx.stage_dir("validate") / "stats.json")
    run_id = str(stats["run_id"])
    gate = read_json(ctx.stage_dir("gate") / "decision.json")
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
    metrics = read_json(ctx.stage_dir("evaluate") / "metrics.json")
    index_info = read_json(ctx.stage_dir("index") / "info-full.json")
    window = stats["data_window"]
    manifest = BundleManifest(
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
        files=checksum_tree(staging),
        extra={"config": ctx.config.model_dump(), "gate": gate},
    )
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
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
    warehouse_build.rebuild(ctx.artifacts, run_id, ctx.stage_dir("validate") / "clean.parquet")
    removed = prune_runs(ctx.artifacts, ctx.config.publish.keep_runs)
    return {"run_id": run_id, "bundle": str(final), "pruned": removed}


def _iso(epoch: object) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(int(str(epoch)), dt.UTC).isoformat()


def list_runs(artifacts: Path) -> list[str]:
    """Published runs, oldest first (by manifest creation time, then id)."""
    found = []
    for path in (artifacts / RUNS_DIR).glob("*/" + MANIFEST_FILE):
        found.append((path.stat().st_mtime, path.parent.name))
    return [name for _, name in sorted(found)]


def prune_runs(artifacts: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` runs; never the CURRENT one."""
    current = read_current(artifacts)
    runs = list_runs(artifacts)
    doomed = [r for r in runs[: max(0, len(runs) - keep)] if r != current]
    for name in doomed:
        shutil.rmtree(run_dir(artifacts, name), ignore_errors=True)
    return doomed


def rollback(artifacts: Path, to: str | None = None) -> str:
    """Point CURRENT at `to`, or at the newest run older than the current one."""
    runs = list_runs(artifacts)
    current = read_current(artifacts)
    if to is None:
        older = runs[: runs.index(current)] if current in runs else runs[:-1]
        if not older:
            raise BundleError(f"nothing to roll back to: runs on disk are {runs}")
        to = older[-1]
    if to not in runs:
        raise BundleError(f"run {to!r} is not on disk; available: {runs}")
    manifest = verify_bundle(run_dir(artifacts, to))
    write_current(artifacts, to)
    # Analysts must see what is served: rebuild the warehouse for the restored run.
    clean = artifacts / "work" / manifest.run_date / "validate" / "clean.parquet"
    warehouse_build.rebuild(artifacts, to, clean)
    return to


def prune_work(artifacts: Path, retention_days: int) -> list[str]:
    """Delete `work/<date>` directories (stage outputs, quarantine partitions) older than
    retention_days relative to the newest one, so the result depends on data, not on now()."""
    work = artifacts / "work"
    dates = sorted(p.name for p in work.glob("????-??-??") if p.is_dir()) if work.exists() else []
    if not dates:
        return []
    newest = dt.date.fromisoformat(dates[-1])
    doomed = [d for d in dates if (newest - dt.date.fromisoformat(d)).days > retention_days]
    for d in doomed:
        shutil.rmtree(work / d, ignore_errors=True)
    return doomed
