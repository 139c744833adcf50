"""Pipeline wall time and peak memory (driver + Spark JVM + Python workers) per data set.

    .venv/bin/python bench/pipeline_bench.py --sets mls,1m,5m,20m --out bench/results/pipeline.json

Each set is prepared once (ml-latest-small imported from ../shared, the others generated
with a fixed seed) and the full `recsys batch run` timed as a subprocess while the RSS of
its whole process tree is sampled twice a second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from shared.bundle_layout import MANIFEST

REPO = Path(__file__).resolve().parents[1]
RECSYS = str(REPO / ".venv" / "bin" / "recsys")
SETS = {
    # name: (users, items, events)
    "1m": (20_000, 10_000, 1_000_000),
    "5m": (100_000, 30_000, 5_000_000),
    "20m": (400_000, 60_000, 20_000_000),
}


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(cmd: list[str], log: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    with log.open("w") as fh:
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(0.5)
    return time.perf_counter() - start, peak, child.returncode


def prepare(name: str, root: Path) -> tuple[Path, str]:
    data = root / f"data-{name}"
    if name == "mls":
        if not (data / "interactions.parquet").exists():
            src = REPO.parent / "shared" / "datasets" / "ml-latest-small"
            subprocess.run(
                [RECSYS, "data", "import-movielens", str(src), "--out", str(data)], check=True
            )
        return data, "2016-12-31"
    users, items, events = SETS[name]
    if not (data / "interactions.parquet").exists():
        subprocess.run(
            [
                RECSYS,
                "data",
                "generate",
                "--out",
                str(data),
                "--users",
                str(users),
                "--items",
                str(items),
                "--events",
                str(events),
                "--seed",
                "1",
                "--end-date",
                "2025-12-31",
            ],
            check=True,
        )
    return data, "2025-12-31"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="mls,1m,5m")
    parser.add_argument("--root", type=Path, default=Path("/tmp/recsys-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--protocol", default=None, help="override split.protocol")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.sets.split(","):
        data, run_date = prepare(name, args.root)
        art = args.root / f"art-{name}"
        subprocess.run(["rm", "-rf", str(art)], check=True)
        cmd = [
            RECSYS,
            "batch",
            "run",
            "--data",
            str(data),
            "--artifacts",
            str(art),
            "--run-date",
            run_date,
        ]
        config = args.config
        if args.protocol:
            config = args.root / f"config-{args.protocol}.json"
            config.write_text(json.dumps({"split": {"protocol": args.protocol}}))
        if config:
            cmd += ["--config", str(config)]
        wall, peak, rc = timed(cmd, args.root / f"run-{name}.log")
        key = name + (f"-{args.protocol}" if args.protocol else "")
        entry: dict[str, object] = {
            "wall_seconds": round(wall, 1),
            "peak_rss_gb": round(peak / 2**30, 2),
            "returncode": rc,
            "command": " ".join(cmd),
        }
        current = art / "CURRENT"
        if rc == 0 and current.exists():
            manifest = json.loads(
                (art / "runs" / current.read_text().strip() / MANIFEST).read_text()
            )
            entry["metrics"] = manifest["metrics"]
            entry["row_counts"] = manifest["row_counts"]
        results[key] = entry
        print(
            json.dumps({key: {k: entry[k] for k in ("wall_seconds", "peak_rss_gb", "returncode")}}),
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
