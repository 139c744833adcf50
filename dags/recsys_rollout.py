"""recsys_rollout: the guardrail check of a running canary rollout, every hour.

    check  (`recsys rollout check --artifacts ART [--config F] [--auto-promote]`)

The check rebuilds the warehouse from the service's logs, compares the canary arm with
control (error and fallback rate, p99 latency, then CTR and play rate) and stops a canary
that breaches; with auto_promote it promotes one that held for `rollout.hold_hours`
(docs/experiments.md, "Canary rollouts"). No rollout running: it does nothing, exit 0.
A rollback is a successful check (exit 0, logged and in the rollout_events history); only
a check that could not run (exit 10, RolloutCheckFailed) fails the task and is retried.
The same command runs from cron where there is no Airflow.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _alerts import on_failure_alert
from _common import run_recsys
from airflow.sdk import CronTriggerTimetable, Param, dag, task

log = logging.getLogger("recsys.dags")


def check_args(params: dict[str, Any] | None) -> list[str]:
    """The command for this run: params first, then RECSYS_* env (at run time, not parse)."""
    import os

    params = params or {}
    artifacts = params.get("artifacts_dir") or os.environ.get("RECSYS_ARTIFACTS")
    if not artifacts:
        raise ValueError("not configured: artifacts_dir / RECSYS_ARTIFACTS")
    args = ["rollout", "check", "--artifacts", str(Path(artifacts).expanduser().resolve())]
    config = params.get("config_file") or os.environ.get("RECSYS_CONFIG")
    if config:
        args += ["--config", str(Path(config).expanduser().resolve())]
    if params.get("auto_promote", True):
        args.append("--auto-promote")
    return args


@dag(
    dag_id="recsys_rollout",
    description="Guardrail check of the running canary rollout: roll back or promote",
    schedule=CronTriggerTimetable("15 * * * *", timezone="UTC"),  # off the hour's top
    start_date=datetime(2000, 1, 1, tzinfo=UTC),  # same reasoning as recsys_nightly
    catchup=False,
    max_active_runs=1,  # two checks would both rebuild the warehouse
    dagrun_timeout=timedelta(minutes=50),
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(minutes=3),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": on_failure_alert,
    },
    params={
        "artifacts_dir": Param(None, type=["null", "string"], description="default env RECSYS_ARTIFACTS"),
        "config_file": Param(None, type=["null", "string"],
                             description="PipelineConfig JSON with the `rollout` thresholds; default env RECSYS_CONFIG"),
        "auto_promote": Param(True, type="boolean",
                              description="promote a canary that held for rollout.hold_hours"),
    },
    tags=["recsys", "rollout"],
    doc_md=__doc__,
)  # fmt: skip
def recsys_rollout() -> None:
    @task(task_id="check")
    def check(**context: Any) -> str:
        # StageFailed (exit 10: the check could not run) fails the task: retried, then alerted.
        return run_recsys(check_args(context.get("params")), label="rollout_check")

    check()


recsys_rollout()
