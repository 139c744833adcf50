"""A worker JVM killed mid-stage: the nightly on a 2-worker standalone cluster still
publishes the local run's metrics.

    PYTHONPATH=$PWD .venv/bin/python bench/cluster_fault.py [--stage embeddings] [--delay 8]

Runs the tests' tiny data set once on local[*], then on the cluster; when the cluster run
logs `<stage>: started` and `--delay` seconds have passed, SIGKILLs worker-2's JVM (its
executor then exits by itself: the executor watches its worker). Spark reschedules the lost
tasks and recomputes the lost shuffle output on worker-1. Reports what was killed, what was
left of the worker's process group 10 s later, the run's exit code and wall-clock, and
whether the metrics equal the local run's. Writes bench/results/cluster_fault.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from batch.cluster.standalone import (  # noqa: E402
    StandaloneCluster,
    alive_workers,
    group_pids,
    master_status,
    stop,
)
from shared.bundle import current_bundle  # noqa: E402
from shared.bundle_layout import METRICS  # noqa: E402
from tests.conftest import TINY_RUN_DATE, generate_tiny, tiny_config  # noqa: E402


def command(master: str, data: Path, art: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "shared.cli", "batch", "run", "--data", str(data),
            "--artifacts", str(art), "--run-date", TINY_RUN_DATE.isoformat(),
            "--config", str(config), "--spark-master", master]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", default="embeddings", help="kill during this stage")
    parser.add_argument("--delay", type=float, default=8.0, help="seconds into the stage")
    parser.add_argument("--local-art", type=Path, help="reuse a local run's ART (same data/config)")
    parser.add_argument("--data", type=Path, help="reuse this tiny data set")
    parser.add_argument("--config", type=Path, help="reuse this config")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster_fault.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cluster-fault-"))
    data = args.data or generate_tiny(root / "data")
    config = args.config or root / "config.json"
    if not args.config:
        config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
    local_art = args.local_art
    if local_art is None:
        local_art = root / "art-local"
        subprocess.run(command("local[*]", data, local_art, config), env=env, check=True,
                       capture_output=True)
    state = StandaloneCluster(root / "cluster", workers=2, cores=1, memory="2g").start()
    victim = next(d for d in state.daemons if d.role == "worker-2")
    report: dict[str, object] = {"command": "PYTHONPATH=$PWD .venv/bin/python bench/cluster_fault.py "
                                            f"--stage {args.stage} --delay {args.delay:g}"}
    lines: list[str] = []
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(command(state.master_url, data, root / "art-cluster", config),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "killed_at_s" not in report and f"{args.stage}: started" in line:
                time.sleep(args.delay)
                report["group_before_kill"] = len(group_pids(victim.pid))
                os.kill(victim.pid, signal.SIGKILL)
                report["killed_at_s"] = round(time.perf_counter() - start, 1)
                time.sleep(10)
                report["group_10s_after_kill"] = len(group_pids(victim.pid))
                report["alive_workers_after"] = len(alive_workers(master_status(state.webui_url)))
        report["exit_code"] = proc.wait()
        report["wall_s"] = round(time.perf_counter() - start, 1)
    finally:
        stop(root / "cluster")
    (root / "cluster-run.log").write_text("".join(lines))
    report["log"] = str(root / "cluster-run.log")
    if report["exit_code"] == 0:
        want = json.loads((current_bundle(local_art) / METRICS).read_text())
        got = json.loads((current_bundle(root / "art-cluster") / METRICS).read_text())
        report["same_metrics_as_local"] = want == got
        report["lost_executor_lines"] = sum("Lost executor" in x or "ExecutorLost" in x for x in lines)
    report["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
