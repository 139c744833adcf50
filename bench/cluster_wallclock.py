"""Wall-clock of one small nightly run on local[*] and on a 2-worker standalone cluster,
side by side on this machine, alternating (local, cluster, local, cluster, ...).

    PYTHONPATH=$PWD .venv/bin/python bench/cluster_wallclock.py --rounds 2

Same data (the tests' tiny set: 300 users, 400 items, 15k events) and config for both;
reports each run's pipeline wall-clock and the median per mode, and checks that every run
published the same evaluation metrics. Writes bench/results/cluster_wallclock.json.
The machine's 2 cores are shared: absolute figures are noisy, the ratio less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from batch.cluster.standalone import StandaloneCluster, stop  # noqa: E402
from shared.bundle import current_bundle  # noqa: E402
from shared.bundle_layout import METRICS  # noqa: E402
from tests.conftest import TINY_RUN_DATE, generate_tiny, tiny_config  # noqa: E402


def run(master: str, data: Path, art: Path, config: Path) -> tuple[float, dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "batch", "run", "--data", str(data),
         "--artifacts", str(art), "--run-date", TINY_RUN_DATE.isoformat(),
         "--config", str(config), "--spark-master", master],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{master} run failed:\n{proc.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    return seconds, json.loads((current_bundle(art) / METRICS).read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster_wallclock.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    data = generate_tiny(root / "data")
    config = root / "config.json"
    config.write_text(tiny_config(spark_driver_memory="2g").model_dump_json())
    t0 = time.perf_counter()
    state = StandaloneCluster(root / "cluster", workers=2, cores=1, memory="2g").start()
    startup = time.perf_counter() - t0
    times: dict[str, list[float]] = {"local[*]": [], "cluster": []}
    metrics = []
    try:
        for r in range(args.rounds):
            for mode, master in (("local[*]", "local[*]"), ("cluster", state.master_url)):
                # No brackets in the path: Spark reads a path as a glob pattern.
                seconds, got = run(master, data, root / f"art-{mode.strip('[*]')}-{r}", config)
                times[mode].append(round(seconds, 1))
                metrics.append(got)
                print(f"round {r + 1} {mode}: {seconds:.1f}s", flush=True)
    finally:
        stop(root / "cluster")
    medians = {mode: statistics.median(v) for mode, v in times.items()}
    result = {
        "command": "PYTHONPATH=$PWD .venv/bin/python bench/cluster_wallclock.py "
                   f"--rounds {args.rounds}",
        "data": "tiny: 300 users, 400 items, 15k events; tests/conftest.py tiny_config",
        "cluster": "1 master + 2 workers x 1 core, 2g (batch/cluster/standalone.py)",
        "cluster_startup_s": round(startup, 1),
        "runs_s": times,
        "median_s": medians,
        "cluster_over_local": round(medians["cluster"] / medians["local[*]"], 2),
        "same_metrics": all(m == metrics[0] for m in metrics),
        "load_average_after": os.getloadavg(),
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
