"""The DAGs run for real: `airflow dags test` in a throwaway AIRFLOW_HOME (SQLite), Spark
stages through spark-submit on local[2], on a tiny generated data set.

  * a nightly run succeeds task by task and publishes ART/CURRENT;
  * a second run for the same date publishes byte-identical candidates/recommendations;
  * missing input fails at the sensor, naming the missing path, and raises an alert;
  * a run refused by the quality gate fails with the gate's reason and leaves CURRENT alone;
  * the backfill command line creates one run per date; housekeeping prunes and vacuums.

Airflow and the pipeline run as subprocesses (`.venv/bin/airflow` / `recsys`) with an explicit
environment, each with a timeout so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from batch.stages import STAGE_NAMES
from shared import bundle_layout as layout

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = BIN / "airflow"
RUN_DATE = "2026-01-01"
DAG = "recsys_nightly"
# The stages before the gate, from the registry (the DAG's tasks are its stages).
STAGES = list(STAGE_NAMES[: STAGE_NAMES.index("gate")])
ALL_TASKS = ["wait_for_input", *STAGE_NAMES, "notify_service"]
FULL_RUN_TIMEOUT = 900  # seconds; a tiny run takes ~2-3 min on 2 busy cores

# Small but real: the same code paths as production, sized so a run is dominated by Spark's
# fixed costs. The gate keeps its production thresholds (the fusion weights below are only
# the starting point of the rank stage's tuning), so a pass means the model beat popularity.
FAST_CONFIG = {
    "als": {"rank": 16, "max_iter": 5},
    "candidates": {
        "ann_k": 100,
        "cooc_k": 100,
        "popular_k": 100,
        "source_weights": {"ann": 0.3, "cooc": 1.0, "popular": 0.5},
    },
    "index": {"recall_sample_queries": 100},
    "shuffle_partitions": 2,
    "spark_driver_memory": "2g",
}


def _skip_without_prerequisites() -> None:
    if not AIRFLOW.exists():
        pytest.skip(f"{AIRFLOW} missing (install the airflow extra)")
    if shutil.which("java") is None:
        pytest.skip("java not found: Spark needs Java 17+")
    if not (BIN / "spark-submit").exists():
        pytest.skip("spark-submit missing (install the batch extra)")
    if not (REPO / "batch" / "spark_entry.py").exists():
        pytest.skip("batch/spark_entry.py missing")


@dataclass
class Env:
    home: Path
    data: Path
    art: Path
    config: Path
    alerts: Path
    vars: dict[str, str]

    def airflow(
        self, *args: str, timeout: float = 300, extra: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.vars, **(extra or {})}
        return subprocess.run(
            [str(AIRFLOW), *args],
            env=env,
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        with sqlite3.connect(self.home / "airflow.db") as con:
            rows = con.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ).fetchall()
        return dict(rows)

    def latest_run_id(self, dag_id: str) -> str:
        with sqlite3.connect(self.home / "airflow.db") as con:
            row = con.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
        assert row, f"no dag run of {dag_id}"
        return str(row[0])

    def current(self) -> str:
        return (self.art / "CURRENT").read_text().strip()

    def manifest(self, run_id: str | None = None) -> dict:
        run_id = run_id or self.current()
        return json.loads((self.art / "runs" / run_id / layout.MANIFEST).read_text())


def _sorted_rows(path: Path) -> list[tuple] | None:
    """A parquet file's rows in a canonical order, to tell a byte-level difference (file
    layout, metadata) from a content difference when checksums disagree."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    def hashable(value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    table = pq.read_table(path)
    columns = [[hashable(v) for v in table.column(c).to_pylist()] for c in table.column_names]
    return sorted(zip(*columns, strict=True), key=repr)


def _content_note(before: list[tuple] | None, after_path: Path) -> str:
    after = _sorted_rows(after_path)
    if before is None or after is None:
        return "checksum differs"
    if before == after:
        return "checksum differs, same rows (byte-level nondeterminism in the writer)"
    changed = len(set(before) ^ set(after))
    return f"content differs: {changed} rows differ of {len(before)} / {len(after)}"


def _tail(proc: subprocess.CompletedProcess[str], n: int = 6000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    _skip_without_prerequisites()
    root = tmp_path_factory.mktemp("airflow_e2e")
    home, data, art = root / "airflow_home", root / "data", root / "artifacts"
    home.mkdir()
    config = root / "fast.json"
    config.write_text(json.dumps(FAST_CONFIG))
    alerts = home / "alerts.log"
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    variables = {
        **os.environ,
        # What scripts/airflow_env.sh sets, spelled out so the test shows its whole setup.
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "PATH": path,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "RECSYS_SPARK_DRIVER_MEMORY": "2g",
        "RECSYS_DATA": str(data),
        "RECSYS_ARTIFACTS": str(art),
        "RECSYS_CONFIG": str(config),
        "RECSYS_ALERT_LOG": str(alerts),
        "RECSYS_ALERT_SINKS": "file",
        "RECSYS_INPUT_WAIT_SECONDS": "60",
        "RECSYS_INPUT_POKE_SECONDS": "2",
    }
    for name in ("RECSYS_SERVICE_URL", "RECSYS_SPARK_APPLICATION", "RECSYS_CLI"):
        variables.pop(name, None)
    # This checkout's packages, whatever checkout the editable install points at: the DAG
    # processor imports batch.stages and shared.* from sys.path, not from the dags folder.
    variables["PYTHONPATH"] = str(REPO)
    e = Env(home=home, data=data, art=art, config=config, alerts=alerts, vars=variables)

    migrate = e.airflow("db", "migrate", timeout=300)
    assert migrate.returncode == 0, _tail(migrate)
    gen = subprocess.run(
        [str(BIN / "recsys"), "data", "generate", "--out", str(data), "--users", "300",
         "--items", "200", "--events", "20000", "--seed", "1", "--end-date", "2025-12-31"],
        env=variables, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stdout + gen.stderr
    return e


@pytest.fixture(scope="module")
def first_run(env: Env) -> dict:
    """One full nightly run for RUN_DATE; later tests build on its outputs."""
    proc = env.airflow("dags", "test", DAG, RUN_DATE, timeout=FULL_RUN_TIMEOUT)
    run_id = env.latest_run_id(DAG)
    states = env.task_states(DAG, run_id)
    assert proc.returncode == 0, f"states={states}\n{_tail(proc)}"
    return {"run_id": run_id, "states": states, "current": env.current(), "log": proc.stdout}


@pytest.mark.timeout(FULL_RUN_TIMEOUT + 300)
def test_nightly_run_succeeds_and_publishes(env: Env, first_run: dict) -> None:
    assert first_run["states"] == {task: "success" for task in ALL_TASKS}
    assert (env.art / "CURRENT").exists()
    manifest = env.manifest()
    assert manifest["run_date"] == RUN_DATE  # ds of the logical date, not today
    assert {layout.RECOMMENDATIONS, layout.CANDIDATES} <= set(manifest["files"])
    for stage in [*STAGES, "gate"]:
        assert (env.art / "work" / RUN_DATE / stage).is_dir(), stage
    log = first_run["log"]
    assert "spark-submit" in log and "--master local[2]" in log  # via the spark_default conn
    assert "will pick up CURRENT" in log  # notify_service without RECSYS_SERVICE_URL


@pytest.mark.timeout(FULL_RUN_TIMEOUT + 300)
def test_rerun_of_the_same_date_publishes_identical_outputs(env: Env, first_run: dict) -> None:
    """What a retry, a cleared task or a backfill of an already-run date does: the stages that
    produce candidates and recommendations run again over the same inputs and must publish
    byte-identical files. validate/embeddings/index are marked success (outputs on disk from
    the first run) to keep the suite short; the full two-run equality, and equality with the
    one-process `recsys batch run`, are checked in docs/airflow.md's measurements."""
    before = env.manifest(first_run["current"])
    before_tables = {
        name: _sorted_rows(env.art / "runs" / first_run["current"] / name)
        for name in (layout.RECOMMENDATIONS, layout.CANDIDATES)
    }
    candidates_dir = env.art / "work" / RUN_DATE / "candidates"
    shutil.rmtree(candidates_dir)  # prove the rerun really recomputes them
    proc = env.airflow(
        "dags", "test", DAG, RUN_DATE,
        "--mark-success-pattern", "wait_for_input|validate|embeddings|index",
        timeout=FULL_RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, _tail(proc)
    states = env.task_states(DAG, env.latest_run_id(DAG))
    assert states == {task: "success" for task in ALL_TASKS}
    assert candidates_dir.is_dir()
    after = env.manifest()
    assert after["run_date"] == before["run_date"] == RUN_DATE
    differing = {
        name: _content_note(before_tables.get(name), env.art / "runs" / env.current() / name)
        for name in (layout.RECOMMENDATIONS, layout.CANDIDATES)
        if after["files"][name] != before["files"][name]
    }
    assert not differing, f"re-run of {RUN_DATE} changed published files: {differing}"


@pytest.mark.timeout(300)
def test_missing_input_fails_at_the_sensor_with_the_path(env: Env, first_run: dict) -> None:
    empty = env.home.parent / "no_input_here"
    empty.mkdir(exist_ok=True)
    current = env.current()
    proc = env.airflow(
        "dags", "test", DAG, "2026-01-05", "--conf", json.dumps({"data_dir": str(empty)}),
        timeout=240, extra={"RECSYS_INPUT_WAIT_SECONDS": "3", "RECSYS_INPUT_POKE_SECONDS": "1"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert "input missing" in out and str(empty / "interactions.parquet") in out
    states = env.task_states(DAG, env.latest_run_id(DAG))
    assert states["wait_for_input"] == "failed"
    assert states["validate"] == "upstream_failed"
    assert env.current() == current
    alerts = [json.loads(line) for line in env.alerts.read_text().splitlines()]
    sensor_alerts = [a for a in alerts if a["task_id"] == "wait_for_input"]
    assert sensor_alerts and str(empty) in sensor_alerts[-1]["exception"]
    assert sensor_alerts[-1]["dag_id"] == DAG and sensor_alerts[-1]["log_url"]


@pytest.mark.timeout(300)
def test_gate_failure_fails_the_run_and_keeps_current(env: Env, first_run: dict) -> None:
    """Re-gate RUN_DATE's evaluated run with an impossible floor: the Spark stages are marked
    success (their outputs are on disk from the first run), only gate and publish execute."""
    strict = env.home.parent / "strict.json"
    strict.write_text(json.dumps({**FAST_CONFIG, "publish": {"min_value": 0.99}}))
    pointer = env.art / "CURRENT"
    current, mtime = env.current(), pointer.stat().st_mtime_ns
    proc = env.airflow(
        "dags", "test", DAG, RUN_DATE, "--conf", json.dumps({"config_file": str(strict)}),
        "--mark-success-pattern", "wait_for_input|" + "|".join(STAGES),
        timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert "quality gate refused to publish" in out and "below the configured floor" in out
    states = env.task_states(DAG, env.latest_run_id(DAG))
    assert states["gate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert states["notify_service"] == "upstream_failed"
    assert env.current() == current and pointer.stat().st_mtime_ns == mtime
    gate_alerts = [
        json.loads(line)
        for line in env.alerts.read_text().splitlines()
        if json.loads(line)["task_id"] == "gate"
    ]
    assert gate_alerts and "quality gate" in gate_alerts[-1]["exception"]


@pytest.mark.timeout(300)
def test_backfill_command_creates_one_run_per_date(env: Env) -> None:
    """The documented backfill line is valid Airflow 3 syntax (dry run: no scheduler here)."""
    reser = env.airflow("dags", "reserialize", timeout=240)
    assert reser.returncode == 0, _tail(reser)
    proc = env.airflow(
        "backfill", "create", "--dag-id", DAG, "--from-date", "2026-01-01",
        "--to-date", "2026-01-03", "--dry-run", timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, _tail(proc)
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        assert day in out, day


@pytest.mark.timeout(300)
def test_housekeeping_prunes_and_vacuums(env: Env, first_run: dict) -> None:
    current = env.current()
    proc = env.airflow(
        "dags", "test", "recsys_housekeeping", RUN_DATE,
        "--conf", json.dumps({"keep_bundles": 1, "work_retention_days": 30}),
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, _tail(proc)
    states = env.task_states("recsys_housekeeping", env.latest_run_id("recsys_housekeeping"))
    assert states["prune"] == "success"
    expected_vacuum = "success" if (env.art / "warehouse.duckdb").exists() else "skipped"
    assert states["vacuum_warehouse"] == expected_vacuum
    assert env.current() == current
    assert (env.art / "runs" / current / layout.MANIFEST).exists()  # CURRENT is never pruned
