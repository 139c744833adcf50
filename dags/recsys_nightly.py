"""recsys_nightly: turn the day's interactions into a published recommendation bundle.

    wait_for_input -> one task per stage of the registry (batch/stages/__init__.py), in its
        order -> notify_service; publish emits the bundle Asset

One task per stage so a failed stage is retried or cleared alone: every stage reads the
previous stages' outputs under ART/work/<run_date>/ and overwrites its own, so re-running
any task (or the whole run, or a backfill of a date range) gives the same outputs.

Spark stages go through SparkSubmitOperator and the `spark_default` connection: point that
connection at local[*], spark://, YARN or Kubernetes without touching this file
(docs/airflow.md). gate and publish need no Spark and run the `recsys` CLI.

This file stays cheap to parse: no batch/pyspark imports, no file-system access, no env reads
for paths (those happen when a task runs, see _common.resolve_paths).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _alerts import on_failure_alert
from _common import (
    BUNDLE_ASSET,
    RecsysSparkStageOperator,
    env_int,
    resolve_paths,
    run_cli_stage,
    run_date_of,
)
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, chain, dag, task

from batch.stages import BY_NAME, STAGE_NAMES, STAGES, StageSpec
from shared.errors import InputDriftFailed, QualityGateFailed, StageFailed
from shared.inputs import describe_expected, find_input

log = logging.getLogger("recsys.dags")

# How long to wait for the day's input before failing the run, and how often to look.
# Read at parse time because they are scheduling properties of the sensor; tests and
# `make demo` shorten them through the environment.
INPUT_WAIT_SECONDS = env_int("RECSYS_INPUT_WAIT_SECONDS", 6 * 3600)
INPUT_POKE_SECONDS = max(1, env_int("RECSYS_INPUT_POKE_SECONDS", 300))

# The stages, their order, their kind (Spark-submitted or CLI) and their timeouts come from
# the one registry, batch/stages/__init__.py (import-light: no pyspark, no torch).
NOTIFY_TIMEOUT = timedelta(minutes=2)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "recsys",
    "retries": 2,
    # RECSYS_RETRY_DELAY_SECONDS (parse time, like the sensor's timings) lets a drill or a
    # test retry in seconds; production keeps 2 minutes.
    "retry_delay": timedelta(seconds=env_int("RECSYS_RETRY_DELAY_SECONDS", 120)),
    # Airflow 3.3 takes a multiplier here (True would mean 1.0, i.e. no growth): 2 -> 2, 4 min.
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=1),
    # Runs once the last retry has failed; on_retry_callback stays quiet on purpose.
    "on_failure_callback": on_failure_alert,
}


def published_run_date(artifacts: Path) -> str | None:
    """run_date of the live bundle, or None when there is none (or it cannot be read: then
    the publish stage itself decides)."""
    from shared.bundle import current_bundle, load_manifest
    from shared.errors import BundleError

    try:
        return load_manifest(current_bundle(artifacts)).run_date
    except (BundleError, OSError, ValueError):
        return None


@dag(
    dag_id="recsys_nightly",
    description="Nightly recommender pipeline: Spark stages -> quality gate -> publish bundle",
    # Run for day D fires after D ends (00:00 UTC of D+1) with logical date = data interval
    # start = D, so ds = D and the stages use events up to the end of D. A manual run or a
    # backfill for D gets the same ds, hence the same outputs. (Explicit data-interval
    # timetable: plain "@daily" means a *trigger* timetable under Airflow 3's default config,
    # whose run at 00:00 of D would be for the day that has just begun.)
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    # Fixed and early on purpose: a run (manual, dags test, backfill) for a date before
    # start_date creates no task instances and "succeeds" doing nothing, and replays of
    # historical data sets (MovieLens ends in 2016) must work. catchup=False keeps the
    # scheduler from walking this history.
    start_date=datetime(2000, 1, 1, tzinfo=UTC),
    catchup=False,  # history is rebuilt with `airflow backfill create`, not on deploy
    max_active_runs=1,  # stages share ART/ and the Spark cluster; runs never overlap
    dagrun_timeout=timedelta(hours=8),
    default_args=DEFAULT_ARGS,
    params={
        "data_dir": Param(
            None, type=["null", "string"], description="input dir; default env RECSYS_DATA"
        ),
        "artifacts_dir": Param(
            None, type=["null", "string"], description="artifacts; default env RECSYS_ARTIFACTS"
        ),
        "config_file": Param(
            None,
            type=["null", "string"],
            description="PipelineConfig JSON (--config); default env RECSYS_CONFIG, else none",
        ),
    },
    tags=["recsys", "batch"],
    doc_md=f"{__doc__}\nTasks: {' -> '.join(['wait_for_input', *STAGE_NAMES, 'notify_service'])}\n",
)
def recsys_nightly() -> None:
    @task.sensor(
        task_id="wait_for_input",
        poke_interval=INPUT_POKE_SECONDS,
        # Backstop only: the sensor function fails first, with the missing path in the message.
        timeout=INPUT_WAIT_SECONDS + 2 * INPUT_POKE_SECONDS + 60,
        mode="reschedule",  # frees the worker slot between pokes during a long wait
        execution_timeout=timedelta(minutes=5),  # per poke
    )
    def wait_for_input(wait_seconds: int, **context: Any) -> PokeReturnValue:
        from airflow.sdk.exceptions import AirflowFailException

        paths = resolve_paths(context.get("params"))
        found = find_input(paths["data"])
        if found is not None:
            log.info("input ready: %s", found)
            return PokeReturnValue(is_done=True, xcom_value={**paths, "input": str(found)})

        ti = context["ti"]
        started = ti.get_first_reschedule_date(context) or ti.start_date or datetime.now(UTC)
        waited = (datetime.now(UTC) - started).total_seconds()
        expected = describe_expected(paths["data"])
        if waited >= wait_seconds:
            raise AirflowFailException(
                f"input missing after waiting {waited:.0f}s "
                f"(RECSYS_INPUT_WAIT_SECONDS={wait_seconds}): expected {expected}"
            )
        log.info("waiting for input (%.0fs of %ss): %s", waited, wait_seconds, expected)
        return PokeReturnValue(is_done=False)

    def cli_task(spec: StageSpec) -> Any:
        """A non-Spark stage run through `recsys batch stage STAGE ...`."""

        @task(task_id=spec.name, execution_timeout=spec.timeout)
        def _run(**context: Any) -> None:
            run_cli_stage(spec.name, context)

        return _run()

    def verdict_task(name: str, verdict_code: int) -> Any:
        """A CLI stage whose exit code `verdict_code` is a verdict on the data, not a crash."""

        @task(task_id=name, execution_timeout=BY_NAME[name].timeout)
        def _run(**context: Any) -> None:
            from airflow.sdk.exceptions import AirflowFailException

            try:
                run_cli_stage(name, context)
            except StageFailed as exc:
                if exc.returncode != verdict_code:
                    raise  # a crash, not a verdict: let the retries have a go
                # A verdict (the quality gate's, or an input drift check set to fail) is
                # deterministic: retrying cannot change it, so fail now with its own reason;
                # publish (all_success) is then skipped as upstream_failed and CURRENT keeps
                # pointing at the last good bundle.
                raise AirflowFailException(exc.reason.removeprefix("error: ")) from exc

        return _run()

    @task(task_id="publish", outlets=[BUNDLE_ASSET], execution_timeout=BY_NAME["publish"].timeout)
    def publish(**context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from shared.bundle import read_current

        paths = resolve_paths(context.get("params"))
        artifacts = Path(str(paths["artifacts"]))
        live = published_run_date(artifacts)
        if live is not None and live > run_date_of(context):
            # A backfill of older dates rebuilds their stage outputs (ART/work/<ds>/) but must
            # not roll production back to an older bundle; going back is a deliberate
            # `recsys batch rollback`. Skipped, not failed: the run did what it should.
            raise AirflowSkipException(
                f"CURRENT serves run date {live}, newer than this run's "
                f"{run_date_of(context)}: not publishing (outputs are in {artifacts}/work/)"
            )
        run_cli_stage("publish", context)
        run_id = read_current(artifacts)
        if not run_id:
            raise RuntimeError(f"publish finished but {paths['artifacts']}/CURRENT is missing")
        from shared.errors import RecsysError
        from shared.rollout import current as current_rollout

        # publish.mode canary: tonight's run is a canary beside CURRENT (recsys_rollout's
        # hourly check promotes or rolls it back); consumers see both. The bundle is
        # published either way: an unreadable experiments file only hides the canary here.
        try:
            canary = current_rollout(artifacts)
        except RecsysError as exc:
            log.warning("cannot tell the running canary: %s", exc)
            canary = None
        published = {
            "run_id": run_id,
            "artifacts": paths["artifacts"],
            "run_date": run_date_of(context),
            "canary": canary.run_id if canary else None,
        }
        # Consumers of the asset event learn which bundle is live without reading ART.
        context["outlet_events"][BUNDLE_ASSET].extra = published
        log.info("published %s", json.dumps(published))
        return published

    @task(task_id="notify_service", retries=0, execution_timeout=NOTIFY_TIMEOUT)
    def notify_service(published: dict[str, Any]) -> str:
        """Tell the service to load the new bundle now. Best effort by design: the service
        also polls CURRENT, so an unreachable service delays the swap, it does not lose it."""
        import os
        import urllib.error
        import urllib.request

        base = os.environ.get("RECSYS_SERVICE_URL", "").strip()
        if not base:
            log.info(
                "RECSYS_SERVICE_URL not set: the service will pick up CURRENT=%s by polling",
                published.get("run_id"),
            )
            return "polling"
        url = base.rstrip("/") + "/admin/reload"
        request = urllib.request.Request(
            url,
            data=json.dumps({"run_id": published.get("run_id")}).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Admin-Token": os.environ.get("RECSYS_ADMIN_TOKEN", ""),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                body = resp.read(2000).decode(errors="replace")
                log.info("service reload %s -> HTTP %s %s", url, resp.status, body)
                return "reloaded"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning(
                "service reload failed (%s: %s); it will pick up CURRENT=%s by polling",
                url,
                exc,
                published.get("run_id"),
            )
            return "unreachable"

    published = publish()
    special = {"gate": lambda: verdict_task("gate", QualityGateFailed.exit_code),
               "drift": lambda: verdict_task("drift", InputDriftFailed.exit_code),
               "publish": lambda: published}
    tasks = [
        special[spec.name]() if spec.name in special
        else RecsysSparkStageOperator(stage=spec.name, execution_timeout=spec.timeout)
        if spec.spark_submitted
        else cli_task(spec)
        for spec in STAGES
    ]
    chain(wait_for_input(wait_seconds=INPUT_WAIT_SECONDS), *tasks)
    notify_service(published)


recsys_nightly()
