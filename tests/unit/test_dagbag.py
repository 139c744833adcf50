"""The DAG files parse cleanly, fast, without heavy imports, and have the intended shape.

No scheduler, no Spark: a DagBag over dags/ plus the pure helpers in dags/_common.py and
dags/_alerts.py. The real runs through `airflow dags test` live in
tests/e2e/test_airflow_dags.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow", reason="the airflow extra is not installed")

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
# The DAG's order is the registry's: batch/stages/__init__.py is import-light (no pyspark).
from batch.stages import STAGE_NAMES, STAGES  # noqa: E402
from shared.bundle_layout import MANIFEST  # noqa: E402

NIGHTLY_CHAIN = ["wait_for_input", *STAGE_NAMES, "notify_service"]
SPARK_TASKS = [s.name for s in STAGES if s.spark_submitted]
# The registry and its outputs classes are allowed (pure Python); no other batch module is.
LIGHT_BATCH_MODULES = {"batch", "batch.stages", "batch.stages.outputs"}
HEAVY_MODULES = ["pyspark", "torch", "faiss", "onnxruntime", "duckdb", "pandas"]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throwaway AIRFLOW_HOME so parsing never touches ~/airflow (set before airflow loads
    its config, when this module is the first to import it)."""
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(home))
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
        mp.syspath_prepend(str(DAGS))  # what the DAG processor does for the dags folder
        yield


@pytest.fixture(scope="module")
def dagbag(airflow_env: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


@pytest.fixture(scope="module")
def common(airflow_env: None) -> Any:
    import _common

    return _common


@pytest.fixture(scope="module")
def alerts(airflow_env: None) -> Any:
    import _alerts

    return _alerts


@pytest.fixture(scope="module")
def nightly(dagbag: Any) -> Any:
    return dagbag.dags["recsys_nightly"]


@pytest.fixture(scope="module")
def housekeeping(dagbag: Any) -> Any:
    return dagbag.dags["recsys_housekeeping"]


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def test_every_dag_file_imports_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {"recsys_nightly", "recsys_housekeeping"} <= set(dagbag.dag_ids)


def test_parse_time_is_small(dagbag: Any) -> None:
    # The first file pays for importing the Spark provider (~1-2 s); a DAG doing real work at
    # import (reading data, importing pyspark) would blow well past this on any machine.
    stats = {Path(s.file).name: s.duration for s in dagbag.dagbag_stats}
    assert {"recsys_nightly.py", "recsys_housekeeping.py"} <= set(stats)
    for name, duration in stats.items():
        assert duration < timedelta(seconds=10), f"{name} took {duration} to parse"


def test_dag_files_do_not_import_heavy_modules() -> None:
    """Parsing must not drag pyspark/torch/faiss/duckdb/the batch package into the scheduler."""
    code = (
        "import importlib.util, json, sys\n"
        f"sys.path.insert(0, {str(DAGS)!r})\n"
        "for f in ('recsys_nightly', 'recsys_housekeeping', 'recsys_rollout'):\n"
        f"    spec = importlib.util.spec_from_file_location(f, {str(DAGS)!r} + '/' + f + '.py')\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        f"heavy += [m for m in sys.modules if m.startswith('batch') and m not in {LIGHT_BATCH_MODULES!r}]\n"
        "print(json.dumps(sorted(heavy)))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dags_serialize(dagbag: Any) -> None:
    """What the scheduler stores: a DAG that does not serialize never gets scheduled."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id in ("recsys_nightly", "recsys_housekeeping"):
        data = DagSerialization.serialize_dag(dagbag.dags[dag_id])
        DagSerialization.deserialize_dag(data)


# --------------------------------------------------------------------------------------
# recsys_nightly shape and policies
# --------------------------------------------------------------------------------------


def test_nightly_has_one_task_per_stage_in_order(nightly: Any) -> None:
    assert set(nightly.task_ids) == set(NIGHTLY_CHAIN)
    for upstream, downstream in zip(NIGHTLY_CHAIN, NIGHTLY_CHAIN[1:], strict=False):
        assert nightly.get_task(downstream).upstream_task_ids == {upstream}, downstream
    assert nightly.get_task("wait_for_input").upstream_task_ids == set()
    assert nightly.get_task("notify_service").downstream_task_ids == set()


def test_registry_runner_cli_and_dag_agree(
    nightly: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's stages are the runner's (`recsys batch run`), the CLI help's
    (`recsys batch stage --help`) and the DAG's tasks, in the same order: a stage added to
    one but not the others fails here, not at 2 a.m."""
    from tests.unit.test_stages import cli_help_stages, cli_stage_help, runner_order

    registry = list(STAGE_NAMES)
    upstream = {t: nightly.get_task(t).upstream_task_ids for t in nightly.task_ids}
    dag_order, task = [], "wait_for_input"
    while True:  # walk the chain from the sensor
        after = [t for t, ups in upstream.items() if ups == {task}]
        if not after:
            break
        (task,) = after
        dag_order.append(task)
    assert dag_order[:-1] == registry and dag_order[-1] == "notify_service"
    assert runner_order(tmp_path, monkeypatch) == registry
    assert cli_help_stages(cli_stage_help()) == registry
    for spec in STAGES:  # every task's limit is the registry's
        assert nightly.get_task(spec.name).execution_timeout == spec.timeout, spec.name


def test_nightly_schedule_and_run_policies(nightly: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    assert nightly.catchup is False
    assert nightly.max_active_runs == 1
    assert nightly.dagrun_timeout is not None and nightly.dagrun_timeout <= timedelta(hours=12)
    # Fixed, and before any date we replay: a run for a date before start_date would create
    # no task instances and "succeed" without doing anything.
    assert nightly.start_date.isoformat() == "2000-01-01T00:00:00+00:00"
    timetable = nightly.timetable
    # Daily, with ds = data interval start (the day being processed), in UTC.
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert timetable.expression == "0 0 * * *"
    assert set(nightly.params.keys()) >= {"data_dir", "artifacts_dir", "config_file"}
    assert all(nightly.params[k] is None for k in ("data_dir", "artifacts_dir"))


def test_nightly_tasks_retry_with_backoff_and_time_out(nightly: Any, alerts: Any) -> None:
    for task in nightly.tasks:
        assert task.execution_timeout is not None, task.task_id
        assert task.execution_timeout <= timedelta(hours=3), task.task_id
        assert task.on_failure_callback, task.task_id
        if task.task_id == "notify_service":
            assert task.retries == 0  # best effort; never fails the run anyway
            continue
        assert task.retries == 2, task.task_id
        assert task.retry_exponential_backoff > 1, task.task_id
        assert task.retry_delay > timedelta(0)
        assert task.max_retry_delay is not None
    callbacks = nightly.get_task("validate").on_failure_callback
    assert alerts.on_failure_alert in (callbacks if isinstance(callbacks, list) else [callbacks])


def test_spark_stages_use_spark_submit_and_the_spark_default_connection(
    nightly: Any, common: Any
) -> None:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for task_id in SPARK_TASKS:
        task = nightly.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator), task_id
        assert task._conn_id == "spark_default"
        assert task.stage == task_id
    for task_id in ("train_ranker", "gate", "publish", "notify_service"):
        assert not isinstance(nightly.get_task(task_id), SparkSubmitOperator)


def test_sensor_reschedules_and_times_out(nightly: Any) -> None:
    sensor = nightly.get_task("wait_for_input")
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval >= 1
    wait = sensor.op_kwargs["wait_seconds"]
    # The function fails with a clear message at `wait`; the operator timeout is a backstop.
    assert sensor.timeout > wait > 0


def test_publish_emits_the_bundle_asset(nightly: Any, common: Any) -> None:
    assert common.BUNDLE_ASSET in nightly.get_task("publish").outlets
    assert not nightly.get_task("gate").outlets


def _fake_published_bundle(art: Path, run_id: str, run_date: str) -> None:
    run = art / "runs" / run_id
    run.mkdir(parents=True)
    manifest = {
        "run_id": run_id,
        "run_date": run_date,
        "created_at": "2026-01-06T00:00:00+00:00",
        "code_version": "test",
        "config_fingerprint": "x",
        "data_window": {},
        "row_counts": {},
        "metrics": {},
        "index": {
            "kind": "flat",
            "dim": 2,
            "n_items": 1,
            "built_on": "cpu",
            "recall_at_100": 1.0,
            "build_seconds": 0.0,
        },
        "files": {},
    }
    (run / MANIFEST).write_text(json.dumps(manifest))
    (art / "CURRENT").write_text(run_id + "\n")


def test_publish_never_rolls_current_back_to_an_older_date(
    nightly: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill of older dates must not replace the live bundle of a newer date."""
    from airflow.sdk.exceptions import AirflowSkipException

    art = tmp_path / "art"
    _fake_published_bundle(art, "2026-01-05-abc", "2026-01-05")
    monkeypatch.setenv("RECSYS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(art))
    monkeypatch.setenv("RECSYS_CLI", "false")  # publish would fail loudly if it were called
    publish = nightly.get_task("publish").python_callable
    with pytest.raises(AirflowSkipException, match="newer than this run's 2026-01-02"):
        publish(params={}, ds="2026-01-02")
    assert (art / "CURRENT").read_text().strip() == "2026-01-05-abc"
    # Same or later date: the publish stage runs (here: the stand-in CLI fails).
    with pytest.raises(Exception, match="stage publish failed"):
        publish(params={}, ds="2026-01-05")


# --------------------------------------------------------------------------------------
# recsys_housekeeping
# --------------------------------------------------------------------------------------


def test_housekeeping_shape(housekeeping: Any, common: Any) -> None:
    assert set(housekeeping.task_ids) == {"prune", "vacuum_warehouse"}
    assert housekeeping.get_task("vacuum_warehouse").upstream_task_ids == {"prune"}
    assert housekeeping.catchup is False
    assert housekeeping.max_active_runs == 1
    # Scheduled on the published bundle (and daily, as a fallback).
    assert common.BUNDLE_ASSET in list(housekeeping.timetable.asset_condition.objects)
    for task in housekeeping.tasks:
        assert task.retries >= 1 and task.execution_timeout is not None
        assert task.on_failure_callback


def test_vacuum_task_runs_the_cli_and_skips_a_missing_or_busy_warehouse(
    housekeeping: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task is `recsys warehouse vacuum`; exit 8 (WarehouseUnavailable) means skip."""
    import duckdb
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.delenv("RECSYS_CLI", raising=False)
    vacuum = housekeeping.get_task("vacuum_warehouse").python_callable
    params = {"artifacts_dir": str(tmp_path)}
    with pytest.raises(AirflowSkipException, match="no warehouse at"):
        vacuum(params=params)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    with pytest.raises(AirflowSkipException, match="warehouse busy"):
        vacuum(params=params)  # one writer per file: this test holds it
    con.close()
    assert f"vacuumed {tmp_path / 'warehouse.duckdb'}" in vacuum(params=params)


# --------------------------------------------------------------------------------------
# Helpers: paths from params/env at run time, stage args, the Spark operator's arguments
# --------------------------------------------------------------------------------------


def test_resolve_paths_prefers_params_then_env(common: Any, tmp_path: Path) -> None:
    env = {"RECSYS_DATA": str(tmp_path / "envdata"), "RECSYS_ARTIFACTS": str(tmp_path / "envart")}
    got = common.resolve_paths({}, env)
    assert got == {"data": env["RECSYS_DATA"], "artifacts": env["RECSYS_ARTIFACTS"], "config": None}
    got = common.resolve_paths({"data_dir": str(tmp_path / "p"), "config_file": "c.json"}, env)
    assert got["data"] == str(tmp_path / "p")
    assert got["artifacts"] == env["RECSYS_ARTIFACTS"]
    assert got["config"] == str(Path("c.json").resolve())
    with pytest.raises(ValueError, match="RECSYS_ARTIFACTS"):
        common.resolve_paths({}, {"RECSYS_DATA": "x"})


def test_stage_args_follow_the_documented_interface(common: Any) -> None:
    paths = {"data": "/d", "artifacts": "/a", "config": None}
    assert common.stage_args("rank", paths, "2026-01-01") == [
        "rank",
        "--data",
        "/d",
        "--artifacts",
        "/a",
        "--run-date",
        "2026-01-01",
    ]
    with_config = common.stage_args("gate", {**paths, "config": "/c.json"}, "2026-01-01")
    assert with_config[-2:] == ["--config", "/c.json"]


def test_run_date_is_ds_never_now(common: Any) -> None:
    assert common.run_date_of({"ds": "2024-02-29"}) == "2024-02-29"
    with pytest.raises(ValueError):
        common.run_date_of({})


def test_spark_operator_builds_its_arguments_at_run_time(
    nightly: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    seen: dict[str, Any] = {}

    def fake_execute(self: Any, context: Any) -> None:
        seen["application"] = self.application
        seen["args"] = list(self.application_args)
        seen["conf"] = dict(self.conf)

    monkeypatch.setattr(SparkSubmitOperator, "execute", fake_execute)
    monkeypatch.setenv("RECSYS_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path / "a"))
    monkeypatch.delenv("RECSYS_CONFIG", raising=False)
    monkeypatch.delenv("RECSYS_SPARK_APPLICATION", raising=False)
    monkeypatch.delenv("RECSYS_SPARK_LOG_LEVEL", raising=False)
    task = nightly.get_task("embeddings")
    task.execute({"params": {"data_dir": None, "artifacts_dir": None}, "ds": "2026-01-01"})
    assert seen["application"] == str(REPO / "batch" / "spark_entry.py")
    assert seen["conf"]["spark.log.level"] == "WARN"
    assert seen["args"] == [
        "embeddings",
        "--data",
        str(tmp_path / "d"),
        "--artifacts",
        str(tmp_path / "a"),
        "--run-date",
        "2026-01-01",
    ]


@pytest.mark.parametrize(
    ("connection", "durable", "rm_api"),
    [
        ({"conn_type": "spark", "host": "local[*]"}, True, False),
        ({"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}, False, False),
        (
            {
                "conn_type": "spark",
                "host": "yarn",
                "extra": {
                    "deploy-mode": "cluster",
                    "yarn_resourcemanager_webapp_address": "http://rm:8088",
                },
            },
            True,
            True,
        ),
    ],
)
def test_spark_operator_adapts_to_a_yarn_cluster_connection(
    common: Any,
    monkeypatch: pytest.MonkeyPatch,
    connection: dict[str, Any],
    durable: bool,
    rm_api: bool,
) -> None:
    """Switching spark_default to YARN cluster mode must not require a DAG change (the
    provider rejects durable=True there unless the RM REST API tracks the application)."""
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(connection))
    op = common.RecsysSparkStageOperator(stage="validate")
    op._adapt_to_connection()
    assert (op.durable, op._yarn_track_via_rm_api) == (durable, rm_api)


def test_stage_failure_reason_is_the_cli_error_line() -> None:
    from shared.errors import StageFailed

    out = ["INFO starting", "error: quality gate refused to publish: ndcg@10 0.1 <= 0.2", "bye"]
    exc = StageFailed("gate", 3, out)
    assert exc.reason == "error: quality gate refused to publish: ndcg@10 0.1 <= 0.2"
    assert "exit 3" in str(exc) and exc.returncode == 3 and exc.stage == "gate"
    assert StageFailed("x", 2, ["a", "b"]).reason == "a | b"
    assert StageFailed.exit_code == 7


def test_run_recsys_raises_stage_failed_with_the_exit_code(
    common: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the gate and vacuum tasks branch on: the command's own exit code."""
    from shared.errors import StageFailed

    script = "import sys; print('error: refused'); sys.exit(3)"
    monkeypatch.setenv("RECSYS_CLI", f"{sys.executable} -c {json.dumps(script)}")
    with pytest.raises(StageFailed) as info:
        common.run_recsys(["batch", "stage", "gate"], label="gate")
    assert info.value.returncode == 3 and info.value.reason == "error: refused"


# --------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------


class _FakeTI:
    dag_id = "recsys_nightly"
    task_id = "gate"
    run_id = "manual__2026-01-01"
    try_number = 3
    log_url = "http://localhost:8080/dags/recsys_nightly/runs/x/tasks/gate"


def test_failure_alert_appends_a_json_line(
    alerts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    sink = tmp_path / "alerts" / "alerts.log"
    monkeypatch.setenv("RECSYS_ALERT_LOG", str(sink))
    monkeypatch.setenv("RECSYS_ALERT_SINKS", "file,log")
    context = {
        "ti": _FakeTI(),
        "run_id": "manual__2026-01-01",
        "logical_date": datetime(2026, 1, 1, tzinfo=UTC),
        "exception": RuntimeError("quality gate refused"),
    }
    alerts.on_failure_alert(context)
    alerts.on_failure_alert(context)
    lines = sink.read_text().splitlines()
    assert len(lines) == 2
    alert = json.loads(lines[0])
    assert alert["dag_id"] == "recsys_nightly"
    assert alert["task_id"] == "gate"
    assert alert["run_id"] == "manual__2026-01-01"
    assert alert["logical_date"] == "2026-01-01T00:00:00+00:00"
    assert alert["exception"] == "RuntimeError: quality gate refused"
    assert alert["log_url"].startswith("http://")


def test_alert_sinks_are_pluggable_and_never_raise(alerts: Any) -> None:
    got: list[dict[str, Any]] = []

    @alerts.alert_sink("test-collect")
    def _collect(alert: dict[str, Any]) -> None:
        got.append(alert)

    @alerts.alert_sink("test-broken")
    def _broken(alert: dict[str, Any]) -> None:
        raise OSError("smtp down")

    try:
        env = {"RECSYS_ALERT_SINKS": "test-broken, nope ,test-collect"}
        delivered = alerts.send_alert({"task_id": "x"}, env)
        assert delivered == ["test-collect"]
        assert got == [{"task_id": "x"}]
    finally:
        alerts.ALERT_SINKS.pop("test-collect")
        alerts.ALERT_SINKS.pop("test-broken")


def test_alert_log_defaults_to_airflow_home(alerts: Any) -> None:
    assert alerts.alert_log_path({"AIRFLOW_HOME": "/x"}) == Path("/x/alerts.log")
    assert alerts.alert_log_path({"RECSYS_ALERT_LOG": "/y/a.log"}) == Path("/y/a.log")


# --------------------------------------------------------------------------------------
# notify_service: POSTs the reload, and never fails the run when the service is down
# --------------------------------------------------------------------------------------


@pytest.fixture
def reload_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append(
                {"path": self.path, "token": self.headers.get("X-Admin-Token"), "body": body}
            )
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"reloaded": true}')

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", calls
    finally:
        server.shutdown()
        server.server_close()


def test_notify_service_posts_reload_with_token(
    nightly: Any, reload_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = reload_server
    monkeypatch.setenv("RECSYS_SERVICE_URL", url + "/")
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "s3cret")
    notify = nightly.get_task("notify_service").python_callable
    assert notify({"run_id": "r1"}) == "reloaded"
    assert calls == [{"path": "/admin/reload", "token": "s3cret", "body": b'{"run_id": "r1"}'}]


def test_notify_service_tolerates_a_down_service_and_no_url(
    nightly: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notify = nightly.get_task("notify_service").python_callable
    monkeypatch.setenv("RECSYS_SERVICE_URL", f"http://127.0.0.1:{port}")
    assert notify({"run_id": "r1"}) == "unreachable"
    monkeypatch.delenv("RECSYS_SERVICE_URL")
    assert notify({"run_id": "r1"}) == "polling"
