"""The nightly DAG through Airflow's `spark_default` connection on a real Spark standalone
cluster (a master and two 1-core workers started by batch/cluster/standalone.py).

  * `airflow dags test recsys_nightly` with AIRFLOW_CONN_SPARK_DEFAULT =
    `spark://127.0.0.1:<port>`, deploy mode client, succeeds task by task; every Spark task
    is a spark-submit to that master (the task log shows the command line);
  * the bundle's metrics.json equals, to the 4th decimal, the `pipeline_artifacts` fixture's
    (the same tiny data and config in one local[2] process, reused rather than run again);
  * the Spark work really ran on the cluster: the master lists one completed application per
    stage that opens a Spark session, each FINISHED, and each of them has executor work
    directories on the workers holding the shipped code zip;
  * nothing relies on the driver's disk: as in test_cluster_e2e.py the workers run with the
    driver's private directories (the Airflow home, TMPDIR, cwd) and every copy of the
    project's source hidden by an empty mount;
  * stopping the cluster leaves none of its processes running.

One Airflow run (~4-8 min on 2 shared cores, one spark-submit per Spark stage); the cluster
is started once for the module.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.cluster.standalone import (
    ClusterState,
    StandaloneCluster,
    group_pids,
    master_status,
    stop,
)
from batch.stages import STAGE_NAMES, STAGES
from shared.bundle import current_bundle
from tests.conftest import TINY_RUN_DATE, tiny_config
from tests.e2e.conftest import assert_same_metrics
from tests.e2e.test_airflow_dags import AIRFLOW, BIN, _skip_without_prerequisites
from tests.e2e.test_cluster_e2e import _can_hide, _installed_code_dirs

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
DAG = "recsys_nightly"
RUN_TIMEOUT = 1500  # seconds; one run is ~4-8 min on 2 shared cores, more at load ~20
ALL_TASKS = ["wait_for_input", *STAGE_NAMES, "notify_service"]
# The stages that open a Spark session, hence one application each on the master (index is
# spark-submitted too but builds FAISS on the driver without a session).
SESSION_STAGES = [spec.name for spec in STAGES if spec.needs_session]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver's own directories (Airflow home, TMPDIR, cwd): never visible to workers."""
    _skip_without_prerequisites()
    if not _can_hide():
        pytest.skip("hiding the driver's directories from workers needs Linux, root and unshare")
    root = tmp_path_factory.mktemp("airflow-driver-private")
    (root / "tmp").mkdir()
    (root / "airflow_home").mkdir()
    return root


@pytest.fixture(scope="module")
def cluster(private: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    directory = tmp_path_factory.mktemp("airflow-spark-cluster")
    hidden = [private, *sorted({REPO / "batch", REPO / "shared", *_installed_code_dirs()})]
    state = StandaloneCluster(directory, workers=2, cores=1, memory="2g",
                              python=sys.executable, hide_from_workers=tuple(hidden)).start()
    yield state
    stop(directory)  # a no-op when the test stopped it already


def _airflow_env(private: Path, cluster: ClusterState, data: Path, art: Path,
                 config: Path) -> dict[str, str]:
    home = private / "airflow_home"
    host, port = cluster.master_url.rsplit(":", 1)
    env = {
        **os.environ,
        # What scripts/airflow_env.sh sets, with the connection pointed at the cluster.
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({
            "conn_type": "spark", "host": host, "port": int(port),
            "extra": {"deploy-mode": "client"},
        }),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        # The drivers' scratch space is private: a task that read it on an executor would fail.
        "TMPDIR": str(private / "tmp"),
        "SPARK_LOCAL_DIRS": str(private / "tmp"),
        "RECSYS_SPARK_DRIVER_MEMORY": "2g",
        "RECSYS_DATA": str(data),
        "RECSYS_ARTIFACTS": str(art),
        "RECSYS_CONFIG": str(config),
        "RECSYS_ALERT_LOG": str(home / "alerts.log"),
        "RECSYS_ALERT_SINKS": "file",
        "RECSYS_INPUT_WAIT_SECONDS": "60",
        "RECSYS_INPUT_POKE_SECONDS": "2",
        # This checkout's packages for the DAG processor and the drivers, whatever checkout
        # the editable install points at; executors get them only from the shipped zip.
        "PYTHONPATH": str(REPO),
    }  # fmt: skip
    for name in ("RECSYS_SERVICE_URL", "RECSYS_SPARK_APPLICATION", "RECSYS_CLI"):
        env.pop(name, None)
    return env


def _task_states(home: Path, run_id: str | None = None) -> dict[str, str | None]:
    with sqlite3.connect(home / "airflow.db") as con:
        if run_id is None:
            row = con.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                              (DAG,)).fetchone()  # fmt: skip
            assert row, "no dag run"
            run_id = str(row[0])
        rows = con.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                           (DAG, run_id)).fetchall()  # fmt: skip
    return dict(rows)


@pytest.mark.timeout(RUN_TIMEOUT + 600)
def test_nightly_dag_through_spark_default_on_the_cluster(
    cluster: ClusterState, private: Path, pipeline_artifacts: Path, tiny_data: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.json"
    # The fixture run's config; only the driver heap differs (no effect on results).
    config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    art = tmp_path / "artifacts"
    env = _airflow_env(private, cluster, tiny_data, art, config)

    def airflow(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        # cwd is private too: a spark-submit inherits it as the driver's working directory.
        return subprocess.run([str(AIRFLOW), *args], env=env, cwd=private, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    migrate = airflow("db", "migrate", timeout=300)
    assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-4000:]
    proc = airflow("dags", "test", DAG, TINY_RUN_DATE.isoformat(), timeout=RUN_TIMEOUT)
    log = proc.stdout + proc.stderr
    states = _task_states(private / "airflow_home")
    assert proc.returncode == 0, f"states={states}\n{log[-6000:]}"
    assert states == {task: "success" for task in ALL_TASKS}
    # Through the connection: every Spark task's command line names the cluster's master.
    assert log.count(f"--master {cluster.master_url}") >= len(SESSION_STAGES), log[-3000:]
    assert "--deploy-mode client" in log

    assert_same_metrics(current_bundle(pipeline_artifacts), current_bundle(art))

    # The master saw one application per session stage, all finished (none still running),
    # named by the operator (`recsys-<stage>`).
    status = master_status(cluster.webui_url)
    apps = {a["id"]: a for a in status["completedapps"]}  # type: ignore[union-attr]
    assert status["activeapps"] == []
    assert sorted(a["name"] for a in apps.values()) == sorted(f"recsys-{s}" for s in SESSION_STAGES)
    assert {a["state"] for a in apps.values()} == {"FINISHED"}
    # ... and its executors ran on the workers: every application has executor directories
    # there, each holding the project's code zip shipped from the driver (no shared disk).
    workers = [d for d in cluster.daemons if d.role.startswith("worker")]
    executors = [p for w in workers for p in Path(cluster.directory, w.role, "work").glob("app-*/*")]
    assert {p.parent.name for p in executors} == set(apps)
    # An executor that ran no task holds only its logs: the master may start a replacement
    # in the instant between one executor's exit at shutdown and the application's
    # unregistering (seen: app-...-0000/2, launched and killed within the same second).
    worked = [e for e in executors if {p.name for p in e.iterdir()} - {"stdout", "stderr"}]
    assert {e.parent.name for e in worked} == set(apps)
    for executor in worked:
        names = [p.name for p in executor.iterdir()]
        assert any(n.startswith("recsys-code-") and n.endswith(".zip") for n in names), (executor, names)
    # The stage that ships the FAISS index (candidates) did so into its executors' dirs.
    candidates_app = next(i for i, a in apps.items() if a["name"] == "recsys-candidates")
    assert any(p.name.startswith("index-full-")
               for e in executors if e.parent.name == candidates_app for p in e.iterdir())

    stop(Path(cluster.directory))
    assert [d.role for d in cluster.daemons if group_pids(d.pid)] == []
    assert not (Path(cluster.directory) / "cluster.json").exists()
