"""Wall-clock of the nightly DAG through Airflow (`airflow dags test`) with `spark_default`
on local[*] and on a 2-worker standalone cluster, side by side, alternating
(local, cluster, local, cluster, ...).

    PYTHONPATH=$PWD .venv/bin/python bench/cluster_airflow_wallclock.py --rounds 1

Same data (the tests' tiny set: 300 users, 400 items, 15k events) and config for both,
each run in a fresh AIRFLOW_HOME (SQLite) and artifacts directory; the cluster's workers do
not see the driver's private directories (as in tests/e2e/test_airflow_cluster_e2e.py,
where root and unshare allow it). Reports each run's `dags test` wall-clock, its Spark
tasks' durations from the metadata DB, the medians, the load average, and whether every
run published the same metrics. Writes bench/results/cluster_airflow_wallclock.json.
The machine's 2 cores are shared: absolute figures are noisy, the ratio less so.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from batch.cluster.standalone import StandaloneCluster, master_status, stop  # noqa: E402
from shared.bundle import current_bundle  # noqa: E402
from shared.bundle_layout import METRICS  # noqa: E402
from tests.conftest import TINY_RUN_DATE, generate_tiny, tiny_config  # noqa: E402
from tests.e2e.test_cluster_e2e import _can_hide, _installed_code_dirs  # noqa: E402

BIN = Path(sys.executable).parent


def connection(master: str) -> str:
    if master.startswith("spark://"):
        host, port = master.rsplit(":", 1)
        return json.dumps({"conn_type": "spark", "host": host, "port": int(port),
                           "extra": {"deploy-mode": "client"}})  # fmt: skip
    return json.dumps({"conn_type": "spark", "host": master, "extra": {"deploy-mode": "client"}})


def run(master: str, private: Path, data: Path, art: Path, config: Path) -> dict[str, object]:
    home = private / f"home-{art.name}"
    home.mkdir()
    env = {
        **os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120", "AIRFLOW_CONN_SPARK_DEFAULT": connection(master),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO),
        "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1", "TMPDIR": str(private / "tmp"),
        "SPARK_LOCAL_DIRS": str(private / "tmp"), "RECSYS_SPARK_DRIVER_MEMORY": "2g",
        "RECSYS_DATA": str(data), "RECSYS_ARTIFACTS": str(art), "RECSYS_CONFIG": str(config),
        "RECSYS_ALERT_LOG": str(home / "alerts.log"), "RECSYS_INPUT_WAIT_SECONDS": "60",
        "RECSYS_INPUT_POKE_SECONDS": "2",
    }  # fmt: skip
    for name in ("RECSYS_SERVICE_URL", "RECSYS_SPARK_APPLICATION", "RECSYS_CLI"):
        env.pop(name, None)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, cwd=private, check=True,
                   capture_output=True)  # fmt: skip
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / "airflow"), "dags", "test", "recsys_nightly",
                           TINY_RUN_DATE.isoformat()], env=env, cwd=private,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{master} run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    with sqlite3.connect(home / "airflow.db") as con:
        tasks = dict(con.execute(
            "SELECT task_id, round(duration, 1) FROM task_instance WHERE dag_id = 'recsys_nightly'"
        ).fetchall())  # fmt: skip
    return {
        "seconds": round(seconds, 1), "tasks_s": tasks,
        "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
        "metrics": json.loads((current_bundle(art) / METRICS).read_text()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "cluster_airflow_wallclock.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cluster-airflow-bench-"))
    data = generate_tiny(root / "data")
    config = root / "config.json"
    config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    private = root / "private"
    (private / "tmp").mkdir(parents=True)
    hidden: tuple[Path, ...] = ()
    if _can_hide():
        hidden = (private, *sorted({REPO / "batch", REPO / "shared", *_installed_code_dirs()}))
    t0 = time.perf_counter()
    state = StandaloneCluster(root / "cluster", workers=2, cores=1, memory="2g",
                              python=sys.executable, hide_from_workers=hidden).start()
    startup = time.perf_counter() - t0
    runs: dict[str, list[dict[str, object]]] = {"local[*]": [], "cluster": []}
    try:
        for r in range(args.rounds):
            for mode, master in (("local[*]", "local[*]"), ("cluster", state.master_url)):
                # No brackets in the path: Spark reads a path as a glob pattern.
                got = run(master, private, data, root / f"art-{mode.strip('[*]')}-{r}", config)
                runs[mode].append(got)
                print(f"round {r + 1} {mode}: {got['seconds']}s (load {got['load_before']})",
                      flush=True)  # fmt: skip
        apps = [a.get("name") for a in master_status(state.webui_url).get("completedapps", [])]  # type: ignore[union-attr]
    finally:
        stop(root / "cluster")
    medians = {mode: statistics.median(float(r["seconds"]) for r in v) for mode, v in runs.items()}  # type: ignore[arg-type]
    metrics = [r.pop("metrics") for v in runs.values() for r in v]
    result = {
        "command": "PYTHONPATH=$PWD .venv/bin/python bench/cluster_airflow_wallclock.py "
                   f"--rounds {args.rounds}",
        "data": "tiny: 300 users, 400 items, 15k events; tests/conftest.py tiny_config",
        "cluster": "1 master + 2 workers x 1 core, 2g (batch/cluster/standalone.py)",
        "workers_hide_driver_dirs": bool(hidden),
        "cluster_startup_s": round(startup, 1),
        "cluster_applications": apps,
        "runs": runs,
        "median_s": medians,
        "cluster_over_local": round(medians["cluster"] / medians["local[*]"], 2),
        "same_metrics": all(m == metrics[0] for m in metrics),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
