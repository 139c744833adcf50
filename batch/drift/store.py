"""Where drift results live between runs.

* `ART/state/drift/profiles/<run_id>/`: the profile of every published run (copied there by
  publish, so a run that failed, or was refused, never becomes a reference). The newest
  `drift.keep_profiles` are kept.
* `ART/history/drift.parquet`: one row per check of every run that got as far as the drift
  stage, published or not (idempotent per run_id, like the runs/metrics history): the
  warehouse's `drift` table.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch.drift.checks import DriftReport
from batch.drift.profile import META, Profile

PROFILES_DIR = Path("state") / "drift" / "profiles"
HISTORY_FILE = Path("history") / "drift.parquet"
DRIFT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("run_date", pa.date32()), ("check", pa.string()),
    ("value", pa.float64()), ("threshold", pa.float64()), ("action", pa.string()),
    ("status", pa.string()), ("detail", pa.string()),
])  # fmt: skip


def profiles_root(artifacts: Path) -> Path:
    return artifacts / PROFILES_DIR


def references(artifacts: Path, run_date: dt.date, current_run: str | None,
               window_runs: int) -> tuple[Profile | None, list[Profile]]:  # fmt: skip
    """The previous published run's profile and the trailing window's (newest first).

    Only runs of an earlier run date count (a rerun or backfill never compares with itself
    or with the future). The previous run is CURRENT when it qualifies (after a rollback,
    the bundle actually serving), else the newest stored profile."""
    root = profiles_root(artifacts)
    dirs = sorted((d for d in root.iterdir() if (d / META).exists()), reverse=True) \
        if root.is_dir() else []
    earlier = [d for d in dirs if d.name[:10] < run_date.isoformat()]
    window = [Profile.load(d, seen=False) for d in earlier[:window_runs]]
    chosen = next((d for d in earlier if d.name == current_run), earlier[0] if earlier else None)
    return (Profile.load(chosen) if chosen else None), window


def keep_profile(artifacts: Path, source: Path, run_id: str, keep: int) -> None:
    """Store a published run's profile (replacing one of the same run id); prune the oldest."""
    root = profiles_root(artifacts)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{run_id}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    final = root / run_id
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(d for d in root.iterdir() if not d.name.startswith("."))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def report_rows(report: DriftReport | dict[str, Any], run_date: str) -> list[dict[str, Any]]:
    checks = report["checks"] if isinstance(report, dict) else [vars(c) for c in report.checks]
    run_id = report["run_id"] if isinstance(report, dict) else report.run_id
    day = dt.date.fromisoformat(run_date)
    return [{"run_id": run_id, "run_date": day, "check": c["check"], "value": c["value"],
             "threshold": c["threshold"], "action": c["action"], "status": c["status"],
             "detail": c.get("detail", "")} for c in checks]  # fmt: skip


def merge_history(artifacts: Path, rows: list[dict[str, Any]]) -> pa.Table:
    """Replace the rows of the run ids in `rows` in ART/history/drift.parquet; return it."""
    path = artifacts / HISTORY_FILE
    fresh = pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA)
    table = fresh
    if path.exists():
        old = pq.read_table(path).cast(DRIFT_SCHEMA)
        replaced = {r["run_id"] for r in rows}
        keep = [i for i, r in enumerate(old["run_id"].to_pylist()) if r not in replaced]
        table = pa.concat_tables([old.take(pa.array(keep, pa.int64())), fresh])
    table = table.sort_by([("run_date", "ascending"), ("run_id", "ascending"),
                           ("check", "ascending")])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table


def read_history(artifacts: Path) -> pa.Table:
    path = artifacts / HISTORY_FILE
    return pq.read_table(path).cast(DRIFT_SCHEMA) if path.exists() else DRIFT_SCHEMA.empty_table()
