"""recsys_housekeeping: keep ART/ from growing without bound.

    prune (old bundles beyond retention, never CURRENT; work/<date> incl. quarantine
    partitions older than N days) -> vacuum_warehouse (DuckDB VACUUM/CHECKPOINT)

Runs after every publish of the bundle (the Asset that recsys_nightly's publish emits) and
once a day regardless, so a streak of failed nightly runs still gets its work dirs pruned.
Both tasks are `recsys` commands (`recsys batch prune`, `recsys warehouse vacuum`), next to
the layout they know; this DAG only schedules them and reads their exit codes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _alerts import on_failure_alert
from _common import BUNDLE_ASSET, env_int, run_recsys
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from shared.errors import StageFailed, WarehouseUnavailable

log = logging.getLogger("recsys.dags")


def _settings(params: dict[str, Any] | None) -> dict[str, Any]:
    """Retention settings for this run: params first, then env, then defaults (run time)."""
    import os

    params = params or {}
    artifacts = params.get("artifacts_dir") or os.environ.get("RECSYS_ARTIFACTS")
    if not artifacts:
        raise ValueError("not configured: artifacts_dir / RECSYS_ARTIFACTS")
    keep = params.get("keep_bundles") or env_int("RECSYS_KEEP_BUNDLES", 5)
    days = params.get("work_retention_days") or env_int("RECSYS_WORK_RETENTION_DAYS", 14)
    return {
        "artifacts": str(Path(artifacts).expanduser().resolve()),
        "keep": int(keep),
        "work_retention_days": int(days),
    }


@dag(
    dag_id="recsys_housekeeping",
    description="Prune old bundles and work dirs, vacuum the DuckDB warehouse",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=[BUNDLE_ASSET]
    ),
    start_date=datetime(2000, 1, 1, tzinfo=UTC),  # same reasoning as recsys_nightly
    catchup=False,
    max_active_runs=1,  # two prunes at once would race on the same directories
    dagrun_timeout=timedelta(hours=1),
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=20),
        "on_failure_callback": on_failure_alert,
    },
    params={
        "artifacts_dir": Param(
            None, type=["null", "string"], description="default env RECSYS_ARTIFACTS"
        ),
        "keep_bundles": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="published runs to keep; default env RECSYS_KEEP_BUNDLES or 5",
        ),
        "work_retention_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="days of work/<date> to keep; default env RECSYS_WORK_RETENTION_DAYS or 14",
        ),
    },
    tags=["recsys", "maintenance"],
    doc_md=__doc__,
)
def recsys_housekeeping() -> None:
    @task(task_id="prune")
    def prune(**context: Any) -> str:
        s = _settings(context.get("params"))
        if not Path(s["artifacts"]).exists():
            log.info("nothing to prune: %s does not exist yet", s["artifacts"])
            return "no artifacts"
        args = ["batch", "prune", "--artifacts", s["artifacts"], "--keep", str(s["keep"])]
        args += ["--work-retention-days", str(s["work_retention_days"])]
        return run_recsys(
            args,
            label="prune",
        )

    @task(task_id="vacuum_warehouse")
    def vacuum_warehouse(**context: Any) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        artifacts = _settings(context.get("params"))["artifacts"]
        try:
            return run_recsys(["warehouse", "vacuum", "--artifacts", artifacts],
                              label="vacuum_warehouse")
        except StageFailed as exc:
            if exc.returncode != WarehouseUnavailable.exit_code:
                raise
            # No warehouse yet, or an analyst holds the file (one writer per file). Skipping
            # is safe (the next publish rebuilds it anyway); failing would page for nothing.
            raise AirflowSkipException(exc.reason.removeprefix("error: ")) from exc

    prune() >> vacuum_warehouse()


recsys_housekeeping()
