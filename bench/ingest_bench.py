"""Ingest benchmark: POST /v1/events against a real `recsys serve` (gunicorn, 2 workers).

Closed loop: `--clients` threads, each on its own keep-alive connection, post batches of
`--batch` events (unique event ids) as fast as answers come, for `--seconds`; `--runs`
runs, each on a fresh server and artifact directory. Reported: events/s acknowledged (202,
median over the runs), p50/p99 latency per batch, and loss: after the server's clean stop
every acknowledged event id must be in ART/event_log exactly once.

    PYTHONPATH=$PWD .venv/bin/python bench/ingest_bench.py --runs 3 --seconds 10

Results: bench/results/ingest/<date>.json; docs/benchmarks.md, "Event ingest".
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.events import event_log_dir  # noqa: E402
from shared.parquet_log import part_files, recover_orphans  # noqa: E402
from shared.service_process import free_port, start_service  # noqa: E402

TYPES = ("impression", "click", "play", "complete")


def start(artifacts: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    proc = start_service(artifacts, log, port=port, workers=workers, env={"PYTHONPATH": str(ROOT)},
                         cwd=ROOT, ready_path="/healthz", args=["--log-level", "WARNING"]).proc  # fmt: skip
    time.sleep(1.0)  # both workers up
    return proc


def body(client: int, seq: int, batch: int, now_ms: int) -> tuple[bytes, list[str]]:
    ids = [f"c{client}-{seq}-{n}" for n in range(batch)]
    events = [{"event_id": eid, "type": TYPES[n % 4], "user_id": f"u{(seq * 7 + n) % 5000}",
               "item_id": f"m{(seq * 13 + n) % 20000}", "ts": now_ms - n}
              for n, eid in enumerate(ids)]  # fmt: skip
    return json.dumps({"events": events}).encode(), ids


def client_loop(port: int, client: int, bodies: list[tuple[bytes, list[str]]],
                seconds: float, go: threading.Barrier, out: dict[str, Any]) -> None:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    acked: list[str] = []
    latencies: list[float] = []
    failures = 0
    seq = 0
    headers = {"Content-Type": "application/json"}
    go.wait()
    started = time.monotonic()
    until = started + seconds
    while time.monotonic() < until and seq < len(bodies):
        data, ids = bodies[seq]
        seq += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/events", data, headers)
            resp = conn.getresponse()
            payload = resp.read()
        except OSError:
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if resp.status == 202 and json.loads(payload)["accepted"] == len(ids):
            acked.extend(ids)
        else:
            failures += 1
    conn.close()
    out.update(acked=acked, latencies=latencies, failures=failures,
               elapsed=time.monotonic() - started)  # fmt: skip


def one_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True)
    port = free_port()
    proc = start(artifacts, port, args.workers, work / "server.log")
    results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
    # Bodies are built before the clock starts (client CPU is not the server's cost).
    now_ms = int(time.time() * 1000)
    bodies = [[body(c, s, args.batch, now_ms) for s in range(args.bodies)]
              for c in range(args.clients)]  # fmt: skip
    go = threading.Barrier(args.clients)
    try:
        threads = [threading.Thread(target=client_loop,
                                    args=(port, c, bodies[c], args.seconds, go, results[c]))
                   for c in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # The measured window is what the clients timed (body building excluded).
    latencies = np.array([x for r in results for x in r["latencies"]])
    elapsed = max(r["elapsed"] for r in results)
    acked = [i for r in results for i in r["acked"]]
    root = event_log_dir(artifacts)
    recovered = recover_orphans(root)  # 0 after a clean stop; counted if not
    on_disk = [i for f in part_files(root)
               for i in pq.read_table(f, columns=["event_id"]).column(0).to_pylist()]  # fmt: skip
    on_disk_set = set(on_disk)
    return {
        "events_per_s": round(len(acked) / elapsed, 1),
        "batches": int(latencies.size),
        "batch_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "batch_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "acknowledged": len(acked),
        "failures": sum(r["failures"] for r in results),
        "lost": len(set(acked) - on_disk_set),
        "duplicated_on_disk": len(on_disk) - len(on_disk_set),
        "recovered_orphans": recovered,
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bodies", type=int, default=1500, help="distinct batches per client")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
            run = one_run(args, Path(tmp))
        print(json.dumps(run), flush=True)
        runs.append(run)
    summary = {
        "command": "bench/ingest_bench.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "settings": vars(args) | {"out": None},
        "median_events_per_s": statistics.median(r["events_per_s"] for r in runs),
        "median_batch_p50_ms": statistics.median(r["batch_p50_ms"] for r in runs),
        "median_batch_p99_ms": statistics.median(r["batch_p99_ms"] for r in runs),
        "lost_total": sum(r["lost"] for r in runs),
        "runs": runs,
    }
    out = args.out or ROOT / "bench/results/ingest" / f"{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
