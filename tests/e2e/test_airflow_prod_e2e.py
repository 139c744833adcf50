"""Airflow as in production: PostgreSQL metadata DB, a running scheduler, the REST API, and a
task killed mid-run. One scheduled run does all of it (scripts/airflow_prod.sh):

  * `airflow_prod.sh up` initialises and starts a PostgreSQL cluster of its own, migrates the
    metadata DB into it, starts api-server, scheduler and dag-processor (LocalExecutor) and
    waits until the api-server reports them healthy;
  * the nightly run for the tiny data set's date is triggered through the REST API (JWT from
    POST /auth/token, POST /api/v2/dags/recsys_nightly/dagRuns, PATCH to unpause) and
    followed through it until it succeeds;
  * while the Spark stage `candidates` runs, its task process (the task runner, the process
    running the operator) is SIGKILLed: the spark-submit JVM and the stage driver under it
    die with it (they ran on as orphans beside the retry before shared/parent_death.py), the
    supervisor reports the death, the task goes up_for_retry and try 2 succeeds;
  * the published bundle equals the one-process `recsys batch run` of the same data and
    config (the `pipeline_artifacts` fixture): metrics.json to the 4th decimal, every user's
    recommendation list identical;
  * `airflow_prod.sh down` leaves no process of the components and stops PostgreSQL.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared import bundle_layout as layout
from shared.bundle import current_bundle
from tests.conftest import TINY_RUN_DATE, tiny_config
from tests.e2e.conftest import assert_same_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRIPT = REPO / "scripts" / "airflow_prod.sh"
DAG = "recsys_nightly"
RUN_ID = f"drill__{TINY_RUN_DATE.isoformat()}"
KILL_STAGE = "candidates"
# The kill lands this long after the stage's Python driver (spark_entry.py, started by the
# spark-submit JVM) appears: mid-stage, its session starting or its jobs running (the stage
# takes 60-160 s here on a busy 2-core machine; 8 s only reached the session start-up).
KILL_AFTER_DRIVER_S = 20.0
RUN_TIMEOUT_S = 1800  # one tiny pipeline run through Airflow: ~4-8 min on 2 shared cores
RETRY_DELAY_S = 5


def _pg_bin() -> Path | None:
    for candidate in (shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))):
        if candidate and Path(candidate).with_name("pg_ctl").exists():
            return Path(candidate).parent
    return None




def _lists(bundle: Path) -> dict[str, list[str]]:
    """Every user's recommendation list, in rank order."""
    import pyarrow.parquet as pq

    table = pq.read_table(bundle / layout.RECOMMENDATIONS, columns=["user_id", "rank", "item_id"])
    rows = sorted(zip(*(table.column(c).to_pylist() for c in ("user_id", "rank", "item_id")), strict=True))
    lists: dict[str, list[str]] = {}
    for user, _rank, item in rows:
        lists.setdefault(user, []).append(item)
    return lists


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process, read from /proc (ps cuts
    long command lines such as the spark-submit JVM's, and lines after them went missing)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), cmdline.strip() or stat[: stat.rindex(")") + 1])
    return table


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process under pid."""
    children: dict[int, list[tuple[int, str]]] = {}
    for child, (parent, cmd) in _processes().items():
        children.setdefault(parent, []).append((child, cmd))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class Airflow:
    """The instance `airflow_prod.sh up` started, and a REST client for it."""

    directory: Path
    env: dict[str, str]
    base: str = ""
    token: str = ""
    log: list[str] = field(default_factory=list)

    def script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, cwd=str(REPO),
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def settings(self) -> dict[str, str]:
        out = subprocess.run(["bash", "-c", f"source {self.directory / 'env.sh'}; env -0"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)

    def login(self) -> None:
        self.base = f"http://127.0.0.1:{self.settings()['AIRFLOW_PROD_API_PORT']}"
        password = json.loads((self.directory / "passwords.json").read_text())["admin"]
        reply = self.call("POST", "/auth/token", {"username": "admin", "password": password},
                          auth=False)  # fmt: skip
        self.token = reply["access_token"]

    def call(self, method: str, path: str, body: object | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base + path, method=method, headers=headers,
            data=None if body is None else json.dumps(body).encode(),
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def component_pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in (self.directory / "pids").glob("*.pid")}


@pytest.fixture(scope="module")
def airflow(tiny_data: Path) -> Iterator[Airflow]:
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: make postgres-tools")
    if shutil.which("java") is None:
        pytest.skip("java not found: Spark needs Java 17+")
    for tool in ("airflow", "spark-submit"):
        if not (BIN / tool).exists():
            pytest.skip(f"{BIN / tool} missing (install the airflow and batch extras)")
    if shutil.which("curl") is None:
        pytest.skip("curl not found (airflow_prod.sh's health wait uses it)")
    # Not pytest's tmp_path: its parents are private to root, and as root the cluster runs as
    # the postgres user, which must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="recsys-airflow-prod-"))
    root.chmod(0o755)
    config = root / "config.json"
    # The fixture run's config; only the driver heap differs (no effect on results).
    config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    for name in ("RECSYS_SERVICE_URL", "RECSYS_SPARK_APPLICATION", "RECSYS_CLI"):
        env.pop(name, None)
    env.update({
        "AIRFLOW_PROD_DIR": str(root / "airflow"),
        "PATH": f"{BIN}{os.pathsep}{pg_bin}{os.pathsep}{env.get('PATH', '')}",
        "PG_BIN": str(pg_bin),
        # This checkout's packages, whatever checkout the editable install points at.
        "PYTHONPATH": str(REPO),
        "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "RECSYS_SPARK_DRIVER_MEMORY": "2g",
        "RECSYS_DATA": str(tiny_data), "RECSYS_ARTIFACTS": str(root / "artifacts"),
        "RECSYS_CONFIG": str(config),
        "RECSYS_ALERT_SINKS": "file", "RECSYS_ALERT_LOG": str(root / "alerts.log"),
        "RECSYS_INPUT_WAIT_SECONDS": "120", "RECSYS_INPUT_POKE_SECONDS": "2",
        "RECSYS_RETRY_DELAY_SECONDS": str(RETRY_DELAY_S),
    })  # fmt: skip
    instance = Airflow(directory=root / "airflow", env=env)
    try:
        started = time.monotonic()
        up = instance.script("up")
        instance.log.append(f"up: {time.monotonic() - started:.1f} s")
        assert up.returncode == 0, (up.stdout + up.stderr)[-6000:]
        health = json.loads(up.stdout.splitlines()[0])
        assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor")} == {
            "metadatabase": "healthy", "scheduler": "healthy", "dag_processor": "healthy"}
        yield instance
    finally:
        instance.script("down", timeout=300)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Drill:
    """What the test saw of the run, polling the REST API every second or two."""

    kill_at: float | None = None
    killed: list[tuple[int, str]] = field(default_factory=list)
    killed_pid: int | None = None
    retry_seen_at: float | None = None
    orphans_gone_at: float | None = None
    states: list[tuple[str | None, int]] = field(default_factory=list)
    others_failed: list[str] = field(default_factory=list)


def _follow_run(af: Airflow, started: float) -> tuple[dict[str, Any], Drill]:
    drill = Drill()
    driver_seen: float | None = None
    deadline = started + RUN_TIMEOUT_S
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        # Unpausing also lets the scheduler create yesterday's scheduled run (catchup=False
        # still runs the latest interval). It queues behind ours (max_active_runs=1, ours has
        # the earlier run_after); mark it failed while queued so it never runs on the test's
        # data (deleted, the scheduler creates it again: the interval is still due).
        for other in af.call("GET", f"/api/v2/dags/{DAG}/dagRuns")["dag_runs"]:
            if other["dag_run_id"] != RUN_ID and other["dag_run_id"] not in drill.others_failed:
                assert other["state"] == "queued", f"another run started before ours: {other}"
                quoted = urllib.parse.quote(other["dag_run_id"], safe="")
                af.call("PATCH", f"/api/v2/dags/{DAG}/dagRuns/{quoted}", {"state": "failed"})
                drill.others_failed.append(other["dag_run_id"])
        ti = af.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN_ID}/taskInstances/{KILL_STAGE}")
        state = (ti["state"], ti["try_number"])
        if not drill.states or drill.states[-1] != state:
            drill.states.append(state)
        if drill.kill_at is None and state == ("running", 1) and ti["pid"]:
            tree = _descendants(int(ti["pid"]))
            if any("spark_entry.py" in cmd for _, cmd in tree):
                driver_seen = driver_seen or time.monotonic()
                if time.monotonic() - driver_seen >= KILL_AFTER_DRIVER_S:
                    # The task runner alone (the process running the operator), as the
                    # OOM killer would pick it: what is under it (spark-submit JVM, stage
                    # driver) must die with it (shared/parent_death.py), not run on.
                    drill.killed_pid = int(ti["pid"])
                    drill.killed = [(drill.killed_pid, "task runner"), *tree]
                    os.kill(drill.killed_pid, signal.SIGKILL)
                    drill.kill_at = time.monotonic()
        if drill.kill_at is not None and drill.orphans_gone_at is None and not any(
            _alive(p) for p, _ in drill.killed
        ):
            drill.orphans_gone_at = time.monotonic()
        if drill.kill_at is not None and drill.retry_seen_at is None and (
            state[0] in ("up_for_retry", "queued", "scheduled", "running") and state[1] >= 2
            or state[0] == "up_for_retry"
        ):
            drill.retry_seen_at = time.monotonic()
        run = af.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN_ID}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(1.5)
    return run, drill


@pytest.mark.timeout(RUN_TIMEOUT_S + 900)
def test_scheduled_run_on_postgres_survives_a_killed_task(
    airflow: Airflow, pipeline_artifacts: Path
) -> None:
    af = airflow
    settings = af.settings()
    assert settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    af.login()
    deadline = time.monotonic() + 300
    while True:  # the dag-processor's first parse puts the DAG into the database
        try:
            af.call("GET", f"/api/v2/dags/{DAG}")
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and time.monotonic() < deadline, exc
            time.sleep(2)

    # Trigger first, unpause second: the run is created paused, then the scheduler takes it.
    started = time.monotonic()
    created = af.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {
        "dag_run_id": RUN_ID,
        "logical_date": f"{TINY_RUN_DATE.isoformat()}T00:00:00Z",
        # When the nightly run for that date would have run: the end of the day.
        "run_after": f"{TINY_RUN_DATE.isoformat()}T23:59:59Z",
        "conf": {},
    })  # fmt: skip
    assert created["state"] == "queued" and created["run_type"] == "manual"
    assert created["triggered_by"] == "rest_api"
    assert af.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})["is_paused"] is False

    run, drill = _follow_run(af, started)
    elapsed = time.monotonic() - started
    tis = {t["task_id"]: t for t in
           af.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN_ID}/taskInstances")["task_instances"]}
    tries = af.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN_ID}/taskInstances/{KILL_STAGE}/tries")
    summary = {
        "run_state": run.get("state"), "elapsed_s": round(elapsed, 1),
        "kill_to_retry_s": round(drill.retry_seen_at - drill.kill_at, 1)
        if drill.kill_at and drill.retry_seen_at else None,
        "kill_to_tree_gone_s": round(drill.orphans_gone_at - drill.kill_at, 1)
        if drill.kill_at and drill.orphans_gone_at else None,
        "states_seen": drill.states, "killed": [cmd[:80] for _, cmd in drill.killed],
        "tries": [(t["try_number"], t["state"], t["duration"]) for t in tries["task_instances"]],
        "failed_runs": drill.others_failed, "startup": af.log,
    }  # fmt: skip
    print("DRILL", json.dumps(summary))
    assert run.get("state") == "success", summary
    assert drill.kill_at is not None, f"the run ended before {KILL_STAGE} could be killed: {summary}"
    assert any("java" in cmd for _, cmd in drill.killed), summary  # it hit a live Spark stage
    # What the scheduler recorded: try 1 failed (the supervisor saw the task die), try 2
    # succeeded; it went through up_for_retry; every other task ran once and succeeded.
    assert [(t["try_number"], t["state"]) for t in tries["task_instances"]] == [
        (1, "failed"), (2, "success")], summary
    assert ("up_for_retry", 1) in drill.states or ("up_for_retry", 2) in drill.states, summary
    assert tis[KILL_STAGE]["try_number"] == 2 and tis[KILL_STAGE]["state"] == "success"
    others = {t: (ti["state"], ti["try_number"]) for t, ti in tis.items() if t != KILL_STAGE}
    assert others == {t: ("success", 1) for t in others}, others
    assert drill.retry_seen_at is not None and drill.retry_seen_at - drill.kill_at < 120, summary
    # Nothing of try 1 outlived it (no orphan JVM writing into ART beside try 2), and it was
    # gone before try 2 could start (the retry delay is RETRY_DELAY_S).
    assert [p for p, _ in drill.killed if _alive(p)] == [], drill.killed
    assert drill.orphans_gone_at is not None and drill.orphans_gone_at - drill.kill_at < 15, summary
    # Only our run executed anything: the run unpausing created was failed while queued.
    runs = {r["dag_run_id"]: r["state"] for r in af.call("GET", f"/api/v2/dags/{DAG}/dagRuns")["dag_runs"]}
    assert runs == {RUN_ID: "success", **{other: "failed" for other in drill.others_failed}}, runs
    for other in drill.others_failed:
        quoted = urllib.parse.quote(other, safe="")
        ran = [t["task_id"] for t in af.call(
            "GET", f"/api/v2/dags/{DAG}/dagRuns/{quoted}/taskInstances")["task_instances"]
            if t["try_number"] > 0]  # fmt: skip
        assert ran == [], f"{other} ran {ran}"

    # The same bundle as the one-process CLI run of the same data and config.
    art = Path(af.env["RECSYS_ARTIFACTS"])
    bundle, reference = current_bundle(art), current_bundle(pipeline_artifacts)
    manifest = json.loads((bundle / layout.MANIFEST).read_text())
    assert manifest["run_date"] == TINY_RUN_DATE.isoformat()
    assert_same_metrics(reference, bundle)
    want_lists, got_lists = _lists(reference), _lists(bundle)
    assert len(got_lists) > 0 and got_lists.keys() == want_lists.keys()
    assert [u for u in want_lists if want_lists[u] != got_lists[u]] == []

    # down: every process of the components' sessions ends, PostgreSQL stops.
    sessions = af.component_pids()
    assert set(sessions) == {"api-server", "scheduler", "dag-processor"}
    down = af.script("down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    left = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    strays = [line for line in left.splitlines() if line.split()[1] in {str(p) for p in sessions.values()}]
    assert strays == []
    postmaster = af.directory / "pg" / "data" / "postmaster.pid"
    assert not postmaster.exists()
