"""Normal traffic's latency with and without slow clients, on the real server, loopback only.

Starts `recsys serve` (2 workers, every setting at its default) on a bundle, then runs
open-loop traffic (POST /v1/recommendations for known users, --rate req/s for --duration s,
4 client processes on keep-alive connections, latency from each request's scheduled send
time, so a stalled server shows its queueing) in three phases:
  1. no slow clients;
  2. --slow connections that send the headers and 11 of the 100 body bytes they announce,
     then nothing, each reopened as soon as the server closes it (a persistent attacker);
  3. the same number stuck half-way through a header line.
With --stock the server runs stock gthread (GUNICORN_CMD_ARGS="--worker-class gthread")
instead of online.gworker.RecsysWorker: the same phases, the defect as it was.
Results: bench/results/slow_clients.md (overwritten). Usage:
  .venv/bin/python bench/slow_clients.py [--artifacts ART] [--rate 100] [--duration 10]
      [--slow 16] [--stock]
Without --artifacts a synthetic bundle is built (tests/online/bundle_factory.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from load_test import ROOT, bench_artifacts, known_users
from loadgen import HOST

from shared.service_process import free_port as _free_port
from shared.service_process import start_service

TIMEOUT = 10.0  # a normal request unanswered this long is an error

_HEAD = b"POST /v1/recommendations HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
KINDS = {
    "slow body": _HEAD + b'Content-Length: 100\r\n\r\n{"user_id":',
    "slow headers": b"GET /v1/ping HTTP/1.1\r\nHost: bench\r\nX-Wait: ",
}


def _client(job: dict[str, Any]) -> dict[str, Any]:
    """One open-loop client process on a keep-alive connection; stops sending at stop_at
    (what it had not sent by then is counted as errors: the server had it waiting)."""
    port, bodies, interval, n, start = (job[k] for k in ("port", "bodies", "interval", "n",
                                                         "start"))  # fmt: skip
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    latencies, errors = [], 0
    for i in range(n):
        scheduled = start + i * interval
        if time.monotonic() > job["stop_at"]:
            errors += n - i
            break
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            conn.request("POST", "/v1/recommendations", body=bodies[i % len(bodies)],
                         headers=headers)  # fmt: skip
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors += 1
                continue
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
            continue
        latencies.append(time.monotonic() - scheduled)
    conn.close()
    return {"latencies": latencies, "errors": errors, "sent": n}


def open_loop(port: int, bodies: list[bytes], rate: float, duration: float,
              procs: int) -> dict[str, Any]:  # fmt: skip
    per_proc = rate / procs
    n = int(per_proc * duration)
    start = time.monotonic() + 0.5
    jobs = [
        {"port": port, "bodies": bodies[p::procs] or bodies, "interval": 1.0 / per_proc, "n": n,
         "start": start + p / rate, "stop_at": start + duration + 2 * TIMEOUT}
        for p in range(procs)
    ]  # fmt: skip
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_client, jobs)
    lat = np.concatenate([np.asarray(r["latencies"], dtype=float) for r in results]) * 1000.0
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
    return {
        "requests": sum(r["sent"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "p50": pct(50),
        "p99": pct(99),
        "max": float(lat.max()) if lat.size else float("nan"),
    }


def start_server(artifacts: Path, port: int, log: Path, stock: bool) -> subprocess.Popen[bytes]:
    env = {"RECSYS_RELOAD_POLL_SECONDS": "0"}
    if stock:
        env["GUNICORN_CMD_ARGS"] = "--worker-class gthread"
    return start_service(artifacts, log, port=port, env=env, args=["--log-level", "ERROR"]).proc


class Attacker:
    """Keeps `n` slow connections open, reopening each one the server answers or closes."""

    def __init__(self, port: int, n: int, opening: bytes) -> None:
        self.port, self.n, self.opening = port, n, opening
        self.stop = threading.Event()
        self.answers: dict[str, int] = {}
        self.opened = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=5)
        sock.sendall(self.opening)
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _run(self) -> None:
        socks = [self._open() for _ in range(self.n)]
        try:
            while not self.stop.is_set():
                for i, sock in enumerate(socks):
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    status = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
                    self.answers[status] = self.answers.get(status, 0) + 1
                    sock.close()
                    socks[i] = self._open()
                time.sleep(0.05)
        finally:
            for sock in socks:
                sock.close()

    def __enter__(self) -> Attacker:
        self._thread.start()
        time.sleep(0.5)  # all of them accepted and stuck before the traffic starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=10)


def _fmt(value: float) -> str:
    if value != value:  # nan: nothing was answered
        return "-"
    return f"{value:.2f}" if value < 1000 else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--slow", type=int, default=16, help="slow connections (8 x workers)")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--stock", action="store_true", help="also run stock gthread")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/slow_clients.md")
    args = parser.parse_args()

    work, artifacts = bench_artifacts(args.artifacts)
    from shared.bundle import current_bundle

    bundle = current_bundle(artifacts)
    picked = known_users(bundle)
    bodies = [json.dumps({"user_id": str(u), "k": 20}).encode() for u in picked]

    servers = [("RecsysWorker (this code)", False)] + ([("stock gthread", True)] * args.stock)
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for label, stock in servers:
        port = _free_port()
        server = start_server(artifacts, port, work / f"server-{int(stock)}.log", stock)
        try:
            open_loop(port, bodies[:400], 50.0, 2.0, 2)  # warm caches and code paths
            phases: list[tuple[str, bytes | None]] = [("no slow clients", None)]
            phases += [(f"{args.slow} x {kind}", opening) for kind, opening in KINDS.items()]
            for phase, opening in phases:
                if opening is None:
                    result = open_loop(port, bodies, args.rate, args.duration, args.procs)
                    attack: dict[str, Any] = {}
                else:
                    with Attacker(port, args.slow, opening) as attacker:
                        result = open_loop(port, bodies, args.rate, args.duration, args.procs)
                    attack = {"opened": attacker.opened, "answers": dict(attacker.answers)}
                rows.append({"server": label, "phase": phase, **result, **attack})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()
    load_after = os.getloadavg()

    lines = [
        "# Normal traffic beside slow clients (`bench/slow_clients.py`)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `recsys serve` with 2 workers and every "
        f"setting at its default, {os.cpu_count()} cores, load average "
        f"{load_before[0]:.2f} before / {load_after[0]:.2f} after. Normal traffic: POST "
        f"/v1/recommendations for known users, open loop at {args.rate:g} req/s for "
        f"{args.duration:g} s per phase ({args.procs} client processes, keep-alive; latency "
        "from the scheduled send time; a request unanswered in 10 s, or not sent by 20 s after "
        "the phase, is an error). Slow "
        f"clients: {args.slow} connections kept stuck, each reopened as soon as the server "
        "closes it; 'slow body' announces 100 bytes and sends 11, 'slow headers' stops "
        f"half-way through a header line. Bundle: `{bundle.name}`"
        + (" (synthetic, 5 000 users x 10 000 items)." if not args.artifacts else "."),
        "",
        "| server | phase | requests | errors | p50 ms | p99 ms | max ms | slow connections opened | their answers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("answers", {}).items())) or "-"
        lines.append(
            f"| {r['server']} | {r['phase']} | {r['requests']} | {r['errors']} | "
            f"{_fmt(r['p50'])} | {_fmt(r['p99'])} | {_fmt(r['max'])} | "
            f"{r.get('opened', '-')} | {answers} |"
        )
    lines += [
        "",
        "Reproduce: `.venv/bin/python bench/slow_clients.py"
        + (" --stock" if args.stock else "")
        + f" --rate {args.rate:g} --duration {args.duration:g} --slow {args.slow}`.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
