"""Helpers shared by the recsys DAGs: paths, stage arguments, the Spark stage operator, alerts.

Kept import-light on purpose: the DAG processor imports this module on every parse, so
nothing here touches pyspark, the batch package or the file system at import time. Every
path (data, artifacts, config) is resolved when a task *runs*, from the run's params first
and the worker's environment second, so one parsed DAG serves every environment.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset

from shared.errors import StageFailed

log = logging.getLogger("recsys.dags")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPARK_APPLICATION = REPO_ROOT / "batch" / "spark_entry.py"

# Published by `publish`; downstream DAGs (housekeeping, analysts' refreshes) schedule on it.
# A URI of our own: the artifacts directory is only known at run time, so a file:// URI
# fixed at parse time would lie about where the bundle is. The run id and path travel in
# the asset event's `extra` instead.
BUNDLE_ASSET = Asset(name="recsys_bundle_current", uri="recsys://bundle/current")

def env_int(name: str, default: int) -> int:
    """An int from the environment; a bad value falls back loudly rather than breaking a parse."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError:
        log.warning("ignoring %s=%r (not a number); using %s", name, raw, default)
        return default


# --------------------------------------------------------------------------------------
# Paths and stage arguments (pure functions: unit-tested without Airflow running)
# --------------------------------------------------------------------------------------


def resolve_paths(
    params: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """data/artifacts/config for this run: DAG params win, then RECSYS_* env vars.

    Called at task run time, never at parse time: the scheduler's environment is not the
    worker's, and a trigger with `{"data_dir": ...}` must reach every stage of that run.
    """
    env = os.environ if environ is None else environ
    params = params or {}
    data = params.get("data_dir") or env.get("RECSYS_DATA")
    artifacts = params.get("artifacts_dir") or env.get("RECSYS_ARTIFACTS")
    config = params.get("config_file") or env.get("RECSYS_CONFIG") or None
    missing = [
        name
        for name, value in (
            ("data_dir / RECSYS_DATA", data),
            ("artifacts_dir / RECSYS_ARTIFACTS", artifacts),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"not configured: {', '.join(missing)} (set the DAG param or env var)")
    return {
        "data": str(Path(str(data)).expanduser().resolve()),
        "artifacts": str(Path(str(artifacts)).expanduser().resolve()),
        "config": str(Path(config).expanduser().resolve()) if config else None,
    }


def stage_args(stage: str, paths: Mapping[str, str | None], run_date: str) -> list[str]:
    """The documented stage interface: `STAGE --data D --artifacts A --run-date YYYY-MM-DD`."""
    args = [stage, "--data", str(paths["data"]), "--artifacts", str(paths["artifacts"])]
    args += ["--run-date", run_date]
    if paths.get("config"):
        args += ["--config", str(paths["config"])]
    return args


def run_date_of(context: Mapping[str, Any]) -> str:
    """The run date is the logical date's `ds`: never now(), so re-runs and backfills of a
    date produce that date's outputs."""
    ds = context.get("ds")
    if not ds:
        raise ValueError("this DAG needs a logical date (ds); trigger it with one")
    return str(ds)


def spark_application(environ: Mapping[str, str] | None = None) -> str:
    """spark_entry.py of this checkout, or RECSYS_SPARK_APPLICATION (e.g. a path on a cluster's
    shared storage, or a local:// URI in a Kubernetes image)."""
    env = os.environ if environ is None else environ
    return env.get("RECSYS_SPARK_APPLICATION") or str(DEFAULT_SPARK_APPLICATION)


def recsys_cli(environ: Mapping[str, str] | None = None) -> list[str]:
    """How to invoke `recsys`: RECSYS_CLI (a shell-quoted command, e.g. a wrapper that runs it
    in the batch image) or this interpreter's `python -m shared.cli`, which needs no PATH."""
    env = os.environ if environ is None else environ
    if env.get("RECSYS_CLI"):
        return shlex.split(env["RECSYS_CLI"])
    return [sys.executable, "-m", "shared.cli"]


class RecsysSparkStageOperator(SparkSubmitOperator):
    """spark-submit of one pipeline stage through the `spark_default` connection.

    The arguments are built in execute() (task run time) from params/env and `ds`, because
    an optional `--config FILE` cannot be expressed in a templated argument list, and the
    paths must come from the worker. The hook logs the full spark-submit command line.
    Where Spark runs (local[*], spark://, YARN, Kubernetes) is the connection's business
    only: the DAG never names a master.
    """

    def __init__(self, *, stage: str, **kwargs: Any) -> None:
        kwargs.setdefault("task_id", stage)
        kwargs.setdefault("conn_id", "spark_default")
        kwargs.setdefault("name", f"recsys-{stage}")
        super().__init__(**kwargs)
        self.stage = stage

    def execute(self, context: Any) -> None:
        paths = resolve_paths(context.get("params"))
        self.application = spark_application()
        # spark.driver.memory set inside the job is too late in client mode (the driver JVM is
        # already up), so it goes on the spark-submit line; 1g (Spark's default) is too small.
        self._driver_memory = self._driver_memory or os.environ.get(
            "RECSYS_SPARK_DRIVER_MEMORY", "4g"
        )
        self.application_args = stage_args(self.stage, paths, run_date_of(context))
        # Spark's INFO chatter (block managers, every task) would bury the stage's own log
        # lines in the task log; RECSYS_SPARK_LOG_LEVEL=INFO brings it back for debugging.
        self.conf = {
            "spark.log.level": os.environ.get("RECSYS_SPARK_LOG_LEVEL", "WARN"),
            **(self.conf or {}),
        }
        self._adapt_to_connection()
        self.log.info("stage %s: %s %s", self.stage, self.application, self.application_args)
        super().execute(context)

    def _adapt_to_connection(self) -> None:
        """Keep "change the connection, not the DAG" true for YARN cluster mode.

        The provider refuses YARN cluster mode with durable=True (its default) unless the
        ResourceManager REST API is used for tracking. Use that API when the connection names
        the RM (extra `yarn_resourcemanager_webapp_address`): a worker restart then re-attaches
        to the running application. Without it, fall back to spark-submit waiting for the
        application (durable=False), which is what every other mode does anyway.
        """
        hook = self._get_hook()
        if hook._is_yarn_cluster_mode and not self._yarn_track_via_rm_api:
            extra = hook.get_connection(self._conn_id).extra_dejson
            if extra.get("yarn_resourcemanager_webapp_address"):
                self._yarn_track_via_rm_api = True
            else:
                self.durable = False
            hook = self._get_hook()
        self._hook = hook


def run_cli_stage(stage: str, context: Mapping[str, Any], timeout_s: float | None = None) -> str:
    """`recsys batch stage STAGE ...` for this run (paths from params/env, date from ds)."""
    paths = resolve_paths(context.get("params"))
    return run_recsys(
        ["batch", "stage", *stage_args(stage, paths, run_date_of(context))],
        label=stage,
        timeout_s=timeout_s,
    )


def run_recsys(args: Sequence[str], label: str, timeout_s: float | None = None) -> str:
    """`recsys ARGS` in a child process, its output streamed line by line to the task log.

    A child process (not an import) keeps the worker free of the batch side's heavy imports
    and runs exactly the command an operator would type by hand. Returns the output; raises
    StageFailed carrying the command's own last words (its `error: ...` line).
    """
    cmd = [*recsys_cli(), *args]
    log.info("running: %s", shlex.join(cmd))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(REPO_ROOT),
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log.info("%s", line)
        rc = proc.wait(timeout=timeout_s)
    except BaseException:
        # Timeout or the task being killed: never leave an orphan writing into ART.
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        raise StageFailed(label, rc, lines)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Alerts: on_failure_callback -> pluggable sinks
# --------------------------------------------------------------------------------------

AlertSink = Callable[[dict[str, Any]], None]
ALERT_SINKS: dict[str, AlertSink] = {}


def alert_sink(name: str) -> Callable[[AlertSink], AlertSink]:
    """Register a sink under a name usable in RECSYS_ALERT_SINKS (e.g. `file,slack`)."""

    def register(fn: AlertSink) -> AlertSink:
        ALERT_SINKS[name] = fn
        return fn

    return register


def alert_log_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("RECSYS_ALERT_LOG"):
        return Path(env["RECSYS_ALERT_LOG"])
    home = env.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "alerts.log"


@alert_sink("file")
def _file_sink(alert: dict[str, Any]) -> None:
    """One JSON line per alert: greppable, tail-able, and trivially shipped by a log agent."""
    path = alert_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(alert, sort_keys=True) + "\n")


@alert_sink("log")
def _log_sink(alert: dict[str, Any]) -> None:
    log.error("RECSYS ALERT %s", json.dumps(alert, sort_keys=True))


def build_alert(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    logical = context.get("logical_date")
    exc = context.get("exception")
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # log_url reads config; an alert must never fail on it
        log_url = None
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "logical_date": logical.isoformat() if hasattr(logical, "isoformat") else logical,
        "try_number": getattr(ti, "try_number", None),
        "exception": f"{type(exc).__name__}: {exc}" if exc is not None else None,
        "log_url": log_url,
        "alerted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def send_alert(alert: dict[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """Deliver to every sink named in RECSYS_ALERT_SINKS (default `file`). Returns the sinks
    that succeeded. A broken sink is logged, never raised: the callback must not mask the
    task's own failure."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get("RECSYS_ALERT_SINKS", "file").split(",") if n.strip()]
    delivered: list[str] = []
    for name in names:
        sink = ALERT_SINKS.get(name)
        if sink is None:
            log.warning("unknown alert sink %r (known: %s)", name, sorted(ALERT_SINKS))
            continue
        try:
            sink(alert)
            delivered.append(name)
        except Exception:
            log.exception("alert sink %s failed", name)
    return delivered


def on_failure_alert(context: Any) -> None:
    """Task-level on_failure_callback (runs after the last retry has failed)."""
    try:
        send_alert(build_alert(context))
    except Exception:
        log.exception("could not build/send the failure alert")


# --------------------------------------------------------------------------------------
# Input detection (the sensor)
# --------------------------------------------------------------------------------------

INPUT_CANDIDATES = ("interactions.parquet", "interactions.csv", "interactions")


def find_input(data_dir: str | Path) -> Path | None:
    """The interactions input if it is complete: `interactions.parquet` / `.csv` (a file), or
    `interactions.parquet` / `interactions` as a directory of parquet part files. A directory
    still being written by Spark (`_temporary/` present) does not count yet."""
    root = Path(data_dir)
    for name in INPUT_CANDIDATES:
        path = root / name
        if path.is_file() and path.stat().st_size > 0 and name != "interactions":
            return path
        if path.is_dir() and name != "interactions.csv":
            if (path / "_temporary").exists():
                continue
            if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
                return path
    return None


def describe_expected_input(data_dir: str | Path) -> str:
    root = Path(data_dir)
    return (
        f"{root / 'interactions.parquet'} (file or directory of parquet files), "
        f"{root / 'interactions.csv'} or {root / 'interactions'}/*.parquet"
    )
