"""Helpers shared by the recsys DAGs: paths, stage arguments, the operators that run a stage
(`spark-submit` of one stage, a `recsys` command in a child process). Alerts are in
_alerts.py; what counts as input (the sensor's test) is shared/inputs.py's.

Kept import-light on purpose: the DAG processor imports this module on every parse, so
nothing here touches pyspark, the batch package or the file system at import time. Every
path (data, artifacts, config) is resolved when a task *runs*, from the run's params first
and the worker's environment second, so one parsed DAG serves every environment.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset

from shared.errors import StageFailed
from shared.parent_death import die_with_parent_preexec

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


class TaskBoundSparkSubmitHook(SparkSubmitHook):
    """The provider's hook, with spark-submit bound to the task process that started it.

    A task runner killed with SIGKILL cannot stop its children, and the provider's on_kill()
    never runs then: the spark-submit JVM (and the stage's driver under it) ran on as orphans
    beside the task's retry. Here the kernel kills spark-submit when the task runner dies,
    and spark-submit does not inherit the task runner's stdin (its request socket to the
    supervisor: a child holding it kept the supervisor from noticing the task's death for
    `[workers] socket_cleanup_timeout`, 60 s). docs/airflow.md, the task-kill drill.
    """

    def submit(self, application: str = "", **kwargs: Any) -> str | None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        preexec = die_with_parent_preexec()
        if preexec is not None:
            kwargs.setdefault("preexec_fn", preexec)
        return super().submit(application, **kwargs)


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

    def _get_hook(self) -> SparkSubmitHook:
        hook = super()._get_hook()
        # Same construction as the provider's (all its arguments), our submit().
        hook.__class__ = TaskBoundSparkSubmitHook
        return hook

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
