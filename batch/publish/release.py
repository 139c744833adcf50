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

from batch.publish import warehouse_build
from batch.stages import RunOutputs
from batch.stages.outputs import WORK_DIR, work_dir
from shared import experiments
from shared.bundle import (
    RUNS_DIR,
    accepted_runs,
    load_manifest,
    read_current,
    run_dir,
    verify_bundle,
    write_current,
)
from shared.bundle_layout import MANIFEST
from shared.errors import BundleError, ExperimentsError

log = logging.getLogger(__name__)


def list_runs(artifacts: Path) -> list[str]:
    """Published runs, oldest first (by manifest creation time, then id)."""
    found = []
    for path in (artifacts / RUNS_DIR).glob("*/" + MANIFEST):
        found.append((path.stat().st_mtime, path.parent.name))
    return [name for _, name in sorted(found)]


def prune_runs(artifacts: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` runs; never the CURRENT one, nor one a server
    recorded as the last it accepted (ART/accepted/<server_id>): after nights of refused
    publishes that is what a restarting worker serves; nor one an arm of a running
    experiment serves (ART/experiments.json). With an experiments file that does not
    validate nothing is deleted: the services still serve the last good one, whose arm
    bundles cannot be known from here."""
    try:
        declared = experiments.load(artifacts)
    except ExperimentsError as exc:
        log.warning("not pruning runs: %s", exc)
        return []
    arm_runs = declared.arm_bundles() if declared is not None else set()
    protected = {read_current(artifacts), *accepted_runs(artifacts).values(), *arm_runs}
    runs = list_runs(artifacts)
    doomed = [r for r in runs[: max(0, len(runs) - keep)] if r not in protected]
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
    verify_bundle(run_dir(artifacts, to))
    write_current(artifacts, to)
    # Analysts must see what is served: rebuild the warehouse for the restored run.
    rebuild_warehouse(artifacts, to)
    return to


def rebuild_warehouse(artifacts: Path, run_id: str) -> Path:
    """Rebuild the warehouse for the served run `run_id` from the logs as they are now
    (rollback, a canary's promotion, the rollout check), with the settings it was published
    with: its manifest keeps the config."""
    manifest = load_manifest(run_dir(artifacts, run_id))
    clean = RunOutputs(work_dir(artifacts, manifest.run_date)).validate.clean
    # The attribution window the run was published with; bundles older than the setting
    # get the default.
    publish_config = manifest.extra.get("config", {}).get("publish", {})
    window = publish_config.get("attribution_window_minutes",
                                warehouse_build.DEFAULT_ATTRIBUTION_WINDOW_MINUTES)  # fmt: skip
    # The event log it read: a bundle published with events.path set reads that one.
    event_log = manifest.extra.get("config", {}).get("events", {}).get("path")
    return warehouse_build.rebuild(artifacts, run_id, clean, int(window),
                                   Path(event_log) if event_log else None)  # fmt: skip


def prune_work(artifacts: Path, retention_days: int) -> list[str]:
    """Delete `work/<date>` directories (stage outputs, quarantine partitions) older than
    retention_days relative to the newest one, so the result depends on data, not on now()."""
    work = artifacts / WORK_DIR
    dates = sorted(p.name for p in work.glob("????-??-??") if p.is_dir()) if work.exists() else []
    if not dates:
        return []
    newest = dt.date.fromisoformat(dates[-1])
    doomed = [d for d in dates if (newest - dt.date.fromisoformat(d)).days > retention_days]
    for d in doomed:
        shutil.rmtree(work / d, ignore_errors=True)
    return doomed
