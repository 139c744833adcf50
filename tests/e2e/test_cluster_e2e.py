"""The whole nightly pipeline on a real Spark standalone cluster (a master and two
1-core workers started by batch/cluster/standalone.py) gives the bundle the local run gives.

  * `recsys batch run --spark-master spark://...` publishes a bundle whose evaluation
    metrics equal, to the 4th decimal, those of the `pipeline_artifacts` fixture (the same
    tiny data and config on a local session, reused rather than run again);
  * a worker JVM killed mid-stage (embeddings, before the stage ends) changes nothing:
    Spark redoes the lost tasks on the other worker, the run succeeds with the same
    metrics and the dead worker's executor exits by itself;
  * ALS runs on the default engine, Spark MLlib, as in the local fixture run
    (batch/spark/als.py): the kill lands in executor work (id maps, splits, ALS);
  * both workers ran executors, and what executors need arrived by shipping: the project's
    code zip and the index/EASE files sit in their own work directories;
  * nothing relies on the driver's disk: the workers run with the driver's private
    directories (its TMPDIR and cwd) and every copy of the project's source hidden by an
    empty mount, so a task touching any of them fails the run; only the data and artifact
    directories are visible to both (the paths that must be shared storage, docs/cluster.md);
  * `stop` leaves no process of the cluster running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.cluster.standalone import ClusterState, StandaloneCluster, group_pids, stop
from shared.bundle import current_bundle
from shared.bundle_layout import MANIFEST
from tests.conftest import TINY_RUN_DATE, tiny_config
from tests.e2e.conftest import assert_same_metrics

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 1200  # seconds; ~2-7 min on 2 shared cores
# The fault: worker-2's JVM is SIGKILLed this long after the embeddings stage starts (id
# maps, splits, ALS on Spark MLlib: all Spark jobs on the executors); its executor's
# tasks and shuffle output are lost and redone on worker-1. The test checks the kill came before the stage ended.
KILL_IN_STAGE = "embeddings"
KILL_DELAY_S = 5.0


def _can_hide() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("unshare") is not None


def _installed_code_dirs() -> list[Path]:
    """Where a bare interpreter (no PYTHONPATH, cwd /) finds batch and shared: the editable
    install's checkout, which may be another checkout than this one."""
    probe = subprocess.run(
        [sys.executable, "-c", "import batch, shared; print(batch.__path__[0]); print(shared.__path__[0])"],
        cwd="/", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return [Path(p) for p in probe.stdout.split()] if probe.returncode == 0 else []




@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if shutil.which("java") is None:
        pytest.skip("java not found: Spark needs Java 17+")
    if not _can_hide():
        pytest.skip("hiding the driver's directories from workers needs Linux, root and unshare")
    private = tmp_path_factory.mktemp("driver-private")
    (private / "tmp").mkdir()
    code = {REPO / "batch", REPO / "shared", *_installed_code_dirs()}
    return [private, *sorted(code)]


@pytest.fixture(scope="module")
def cluster(hidden: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    directory = tmp_path_factory.mktemp("spark-cluster")
    state = StandaloneCluster(directory, workers=2, cores=1, memory="2g",
                              python=sys.executable, hide_from_workers=tuple(hidden)).start()
    yield state
    stop(directory)


def test_nightly_on_the_cluster_matches_local(
    cluster: ClusterState, hidden: list[Path], pipeline_artifacts: Path,
    tiny_data: Path, tmp_path: Path,
) -> None:
    private = hidden[0]
    workers = [d for d in cluster.daemons if d.role.startswith("worker")]
    for worker in workers:  # the hiding is in force: each worker sees its own mounts
        mounts = Path(f"/proc/{worker.pid}/mountinfo").read_text()
        assert all(f" {path} " in mounts for path in hidden), mounts[-2000:]

    config = tmp_path / "config.json"
    # The fixture run's config; only the driver heap differs (no effect on results).
    config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    art = tmp_path / "artifacts"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(private / "tmp"),
        "SPARK_LOCAL_DIRS": str(private / "tmp"), "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }  # fmt: skip
    victim = workers[-1]
    killed: list[float] = []

    def kill_worker() -> None:
        os.kill(victim.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    timer = threading.Timer(KILL_DELAY_S, kill_worker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "batch", "run", "--data", str(tiny_data),
         "--artifacts", str(art), "--run-date", TINY_RUN_DATE.isoformat(),
         "--config", str(config), "--spark-master", cluster.master_url],
        cwd=private, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)  # a hang fails instead of blocking CI
    watchdog.start()
    lines: list[str] = []
    stage_done: list[float] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if timer.ident is None and f"{KILL_IN_STAGE}: started" in line:
                timer.start()  # the worker JVM dies while the stage's tasks run
            if not stage_done and f"{KILL_IN_STAGE}: done in" in line:
                stage_done.append(time.monotonic())
        rc = proc.wait()
    finally:
        watchdog.cancel()
        timer.cancel()
    output = "".join(lines)
    assert rc == 0, output[-6000:]
    assert killed, "the run ended before the worker was killed"
    # The fault hit the stage itself, not a later one (a faster stage would need a shorter delay).
    assert stage_done and killed[0] < stage_done[0], "the stage ended before the kill"
    assert "Lost executor" in output, output[-6000:]  # the fault really hit the application
    # The killed worker's executor ended by itself (it watches its worker): no stray JVM.
    assert group_pids(victim.pid) == []

    assert_same_metrics(current_bundle(pipeline_artifacts), current_bundle(art))
    # Both runs fitted ALS on the same engine (what makes equal metrics expected): the
    # default, Spark MLlib, on the executors the kill interrupts.
    engines = [json.loads((current_bundle(a) / MANIFEST).read_text())["extra"]["als"]
               for a in (pipeline_artifacts, art)]
    assert [{v: e["engine"] for v, e in run.items()} for run in engines] == [
        {"ranker": "spark", "eval": "spark", "full": "spark"}] * 2

    # Both workers ran an executor of this application; the files its tasks opened came
    # to them through the driver (addFile/addPyFile), into their own work directories.
    app_dirs = [sorted(Path(cluster.directory, w.role, "work").glob("app-*/*")) for w in workers]
    assert all(len(dirs) == 1 for dirs in app_dirs), app_dirs
    for worker, (executor,) in zip(workers, app_dirs, strict=True):
        names = [p.name for p in executor.iterdir()]
        assert any(n.startswith("recsys-code-") and n.endswith(".zip") for n in names), names
        if worker is not victim:  # the killed one died before the candidates stage shipped these
            assert any(n.startswith("index-full-") for n in names), names

    stop(Path(cluster.directory))
    assert [d.role for d in cluster.daemons if group_pids(d.pid)] == []
    assert not (Path(cluster.directory) / "cluster.json").exists()
