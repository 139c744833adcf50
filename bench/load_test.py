"""Load test of the online service from a second process, loopback only, bounded.

One run starts `recsys serve` (2 workers) on a bundle and measures, against the same server:
  1. open-loop at a fixed rate (default 200 req/s) for the trivial endpoint (/v1/ping), the
     full path (/v1/recommendations, known users) and the fallback path (unknown users ->
     popular): p50/p95/p99 measured from each request's scheduled send time, so a stalled
     server cannot hide its queueing (no coordinated omission);
  2. closed-loop saturation with wrk (if installed) for the same three, for throughput ratios;
  3. RSS/PSS per worker from /proc, and the per-stage latency breakdown from the /metrics
     histograms of the full-path phase.
Results go to bench/results/service.md. Usage:
  .venv/bin/python bench/load_test.py [--artifacts ART] [--rate 200] [--duration 15]
Without --artifacts a synthetic bundle is built (tests/online/bundle_factory.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from load_report import counters, get, report, stage_histograms, stage_table, worker_memory

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, by design
RECSYS = Path(sys.executable).with_name("recsys")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(artifacts: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["RECSYS_RELOAD_POLL_SECONDS"] = "0"  # no reload activity during the measurement
    cmd = [
        str(RECSYS),
        "serve",
        "--artifacts",
        str(artifacts),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return wait_ready(proc, port, log)


def _client(job: dict[str, Any]) -> dict[str, Any]:
    """One open-loop client process: send at scheduled times over one keep-alive connection."""
    port, method, path, bodies = job["port"], job["method"], job["path"], job["bodies"]
    interval, n, start = job["interval"], job["n"], job["start"]
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    latencies, statuses, errors = [], [], 0
    headers = {"Content-Type": "application/json"}
    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = bodies[i % len(bodies)] if bodies else None
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            continue
        latencies.append(time.monotonic() - scheduled)
    conn.close()
    return {"latencies": latencies, "statuses": statuses, "errors": errors}


def open_loop(
    port: int, method: str, path: str, bodies: list[bytes], rate: float, duration: float, procs: int
) -> dict[str, Any]:
    per_proc = rate / procs
    n = int(per_proc * duration)
    start = time.monotonic() + 0.5
    jobs = [
        {
            "port": port,
            "method": method,
            "path": path,
            "bodies": bodies[p::procs] or bodies,
            "interval": 1.0 / per_proc,
            "n": n,
            "start": start + p / rate,
        }
        for p in range(procs)
    ]
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_client, jobs)
    lat = np.concatenate([np.asarray(r["latencies"]) for r in results]) * 1000.0
    statuses = [s for r in results for s in r["statuses"]]
    bad = sum(1 for s in statuses if s != 200) + sum(r["errors"] for r in results)
    return {
        "requests": len(statuses) + sum(r["errors"] for r in results),
        "errors": bad,
        "achieved_rps": len(statuses) / duration,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
    }


def run_wrk(port: int, path: str, bodies: list[bytes], duration: int, tmp: Path) -> dict[str, Any]:
    script = tmp / f"wrk{abs(hash(path))}.lua"
    lines = ",\n".join(json.dumps(b.decode()) for b in bodies[:2000])
    method = "POST" if bodies else "GET"
    script.write_text(
        f'wrk.method = "{method}"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{lines}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        + (
            "  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\n"
            if bodies
            else "  return wrk.format()\n"
        )
        + "end\n"
    )
    cmd = [
        "wrk",
        "-t2",
        "-c8",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://{HOST}:{port}{path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout

    def grab(pattern: str) -> str | None:
        match = re.search(pattern, out)
        return match.group(1) if match else None

    non2xx = int(grab(r"Non-2xx or 3xx responses: (\d+)") or 0)
    sock = grab(r"Socket errors: (.*)")
    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)") or 0),
        "p50": grab(r"\s50%\s+(\S+)"),
        "p99": grab(r"\s99%\s+(\S+)"),
        "errors": non2xx,
        "socket_errors": sock,
    }


def build_synthetic(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.online.bundle_factory import build_bundle

    artifacts = tmp / "synthetic"
    build_bundle(artifacts, "bench", n_users=5000, n_items=10000, dim=64)
    return artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--wrk-duration", type=int, default=8)
    parser.add_argument("--wrk-rounds", type=int, default=3, help="interleaved wrk rounds per phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--procs", type=int, default=4, help="open-loop client processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.md")
    args = parser.parse_args()

    work, artifacts = bench_artifacts(args.artifacts)
    from shared.bundle import current_bundle

    bundle = current_bundle(artifacts)
    picked = known_users(bundle)
    full = [json.dumps({"user_id": u, "k": 20}).encode() for u in picked]
    cold = [json.dumps({"user_id": f"bench-unknown-{i}", "k": 20}).encode() for i in range(500)]
    # The same work as `full`, but a context never seen before (a unique device string), so
    # the per-user scored-candidates cache misses on every request: the uncached full path.
    uncached = [
        json.dumps({"user_id": str(picked[i % len(picked)]), "k": 20,
                    "context": {"device": f"bench-{i}"}}).encode()
        for i in range(20_000)
    ]  # fmt: skip

    port = _free_port()
    load_before = os.getloadavg()
    server = start_server(artifacts, port, args.workers, work / "server.log")
    try:
        for body in full[:200] + cold[:20]:  # warm caches and code paths, as in production
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            conn.request(
                "POST",
                "/v1/recommendations",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            conn.getresponse().read()
            conn.close()
        phases = {
            "trivial GET /v1/ping": ("GET", "/v1/ping", []),
            "full path /v1/recommendations": ("POST", "/v1/recommendations", full),
            "full path, scored cache missed": ("POST", "/v1/recommendations", uncached),
            "fallback (unknown user -> popular)": ("POST", "/v1/recommendations", cold),
        }
        fixed: dict[str, dict[str, Any]] = {}
        stages: dict[str, list[tuple[str, int, str, str]]] = {}
        for name, (method, path, bodies) in phases.items():
            before, counts = stage_histograms(port), counters(port)
            fixed[name] = open_loop(
                port, method, path, bodies, args.rate, args.duration, args.procs
            )
            stages[name] = stage_table(before, stage_histograms(port))
            fixed[name]["answers"] = {
                k: int(v - counts.get(k, 0.0))
                for k, v in counters(port).items()
                if v - counts.get(k, 0.0) > 0
            }
        saturation: dict[str, dict[str, Any]] = {}
        if shutil.which("wrk"):
            # Rounds interleave the phases (ping, full, ..., ping, full, ...) so that drift in
            # the machine's speed hits every phase alike; each phase reports its median round.
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
            for _ in range(args.wrk_rounds):
                for name, (_, path, bodies) in phases.items():
                    rounds[name].append(run_wrk(port, path, bodies, args.wrk_duration, work))
            for name, runs in rounds.items():
                ordered = sorted(runs, key=lambda r: r["rps"])
                saturation[name] = ordered[len(ordered) // 2] | {"rounds": [r["rps"] for r in runs]}
        memory = worker_memory(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    load_after = os.getloadavg()
    report(args, bundle, fixed, saturation, stages, memory, load_before, load_after)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Wait until the server answers /readyz (its bundle loaded); give up after 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {log}")
        try:
            if get(port, "/readyz")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready in 120 s")


def bench_artifacts(given: Path | None) -> tuple[Path, Path]:
    """A scratch directory under bench/results/tmp and the artifacts to serve: the given
    ones, or a synthetic bundle built there."""
    tmp = ROOT / "bench" / "results" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp))
    return work, given or build_synthetic(work)


def known_users(bundle: Path, n: int = 2000) -> np.ndarray:
    """A seeded sample of the users the bundle has lists for (the same on every run)."""
    from shared.bundle_layout import RECOMMENDATIONS

    users = pq.read_table(bundle / RECOMMENDATIONS, columns=["user_id"])
    known = sorted({str(u) for u in users.column("user_id").to_pylist()})
    return np.random.default_rng(0).choice(known, size=min(n, len(known)), replace=False)
