"""Load generation for the service benchmarks (load_test.py, soak.py): the server under test,
an open-loop client and a wrk run, all on loopback.

Latencies are in milliseconds. The open-loop client measures each request from its
*scheduled* send time, so a server that stalls shows its queueing (no coordinated omission).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.service_process import start_service

HOST = "127.0.0.1"  # loopback only, by design
JSON = {"Content-Type": "application/json"}


def start_server(
    artifacts: Path,
    port: int,
    workers: int,
    log: Path,
    code: Path | None = None,
    reload_poll_seconds: float = 1.0,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`recsys serve` on artifacts, once /readyz answers; with `code`, that checkout's
    packages instead of ours (PYTHONPATH is inherited by the gunicorn workers, and gunicorn
    puts its working directory first on their sys.path: it runs from that root)."""
    root = code or Path(__file__).resolve().parents[1]
    env = {"RECSYS_RELOAD_POLL_SECONDS": f"{reload_poll_seconds:g}", "PYTHONPATH": str(root),
           **(extra_env or {})}  # fmt: skip
    return start_service(artifacts, log, port=port, workers=workers, env=env, cwd=root,
                         args=["--log-level", "WARNING"]).proc  # fmt: skip


def warm_up(port: int, bodies: list[bytes]) -> None:
    """One request per body on fresh connections: caches and code paths, as in production."""
    for body in bodies:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("POST", "/v1/recommendations", body=body, headers=JSON)
        conn.getresponse().read()
        conn.close()


def summarize(latencies_ms: np.ndarray) -> dict[str, float]:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if not len(lat):
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan"),
                "max": float("nan")}  # fmt: skip
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999), "max": float(lat.max())}


def _client(job: dict[str, Any]) -> dict[str, Any]:
    """One open-loop client process: send at scheduled times over one keep-alive connection.
    Returns (scheduled send time, latency) pairs so callers can bucket them in time."""
    port, method, path, bodies = job["port"], job["method"], job["path"], job["bodies"]
    interval, n, start = job["interval"], job["n"], job["start"]
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    sent, latencies, statuses, errors, failed_at = [], [], [], 0, []
    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = bodies[i % len(bodies)] if bodies else None
        try:
            conn.request(method, path, body=body, headers=JSON)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            if resp.status != 200:
                failed_at.append(scheduled)
        except (OSError, http.client.HTTPException):
            errors += 1
            failed_at.append(scheduled)
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            continue
        sent.append(scheduled)
        latencies.append(time.monotonic() - scheduled)
    conn.close()
    return {"sent": sent, "latencies": latencies, "statuses": statuses, "errors": errors,
            "failed_at": failed_at}  # fmt: skip


def open_loop(
    port: int, method: str, path: str, bodies: list[bytes], rate: float, duration: float, procs: int
) -> dict[str, Any]:
    """`rate` req/s for `duration` s from `procs` processes; p50/p99/p99.9/max in ms, errors
    (non-200 + socket errors), and the raw (send time, latency) arrays under "sent"/"lat"
    (send times in seconds from the start; "failed_at" those of the errors)."""
    per_proc = rate / procs
    n = int(per_proc * duration)
    start = time.monotonic() + 0.5
    jobs = [
        {"port": port, "method": method, "path": path, "bodies": bodies[p::procs] or bodies,
         "interval": 1.0 / per_proc, "n": n, "start": start + p / rate}
        for p in range(procs)
    ]  # fmt: skip
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_client, jobs)
    lat = np.concatenate([np.asarray(r["latencies"]) for r in results]) * 1000.0
    sent = np.concatenate([np.asarray(r["sent"]) for r in results]) - start
    statuses = [s for r in results for s in r["statuses"]]
    errors = sum(1 for s in statuses if s != 200) + sum(r["errors"] for r in results)
    failed_at = np.sort(np.concatenate([np.asarray(r["failed_at"]) for r in results]) - start)
    return {
        "requests": len(statuses) + sum(r["errors"] for r in results),
        "errors": errors,
        "achieved_rps": len(statuses) / duration,
        **summarize(lat),
        "sent": sent,
        "lat": lat,
        "failed_at": failed_at,
    }


_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("LATENCY_MS p50=%.3f p99=%.3f p999=%.3f max=%.3f\\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000))
end
"""


def run_wrk(
    port: int,
    path: str,
    bodies: list[bytes],
    duration: int,
    tmp: Path,
    connections: int = 4,
    threads: int = 2,
) -> dict[str, Any]:
    """Closed-loop saturation: req/s and p50/p99/p99.9/max (ms, wrk's own histogram)."""
    script = tmp / f"wrk{abs(hash(path))}-{len(bodies)}.lua"
    lines = ",\n".join(json.dumps(b.decode()) for b in bodies[:2000])
    method = "POST" if bodies else "GET"
    request = (
        "  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\n"
        if bodies
        else "  return wrk.format()\n"
    )
    script.write_text(
        f'wrk.method = "{method}"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{lines}\n}}\nlocal i = 0\n"
        f"request = function()\n  i = i + 1\n{request}end\n{_WRK_DONE}"
    )
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script),
           f"http://{HOST}:{port}{path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout

    def grab(pattern: str) -> str | None:
        match = re.search(pattern, out)
        return match.group(1) if match else None

    latency = dict(re.findall(r"(p50|p99|p999|max)=([\d.]+)", grab(r"LATENCY_MS (.*)") or ""))
    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)") or 0),
        **{k: float(latency.get(k, "nan")) for k in ("p50", "p99", "p999", "max")},
        "errors": int(grab(r"Non-2xx or 3xx responses: (\d+)") or 0),
        "socket_errors": grab(r"Socket errors: (.*)"),
    }


class Periodic:
    """A daemon thread calling `tick(seconds since start)` every `every` seconds until
    `stop()`; with `tick_first`, once at start too. What the benchmarks run beside the load
    (bundle_clone.Republisher, soak.MemorySampler)."""

    name = "periodic"
    tick_first = False

    def __init__(self, every: float) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> Periodic:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def tick(self, elapsed: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        if self.tick_first:
            self.tick(time.monotonic() - self._t0)
        while not self._stop.wait(self.every):
            self.tick(time.monotonic() - self._t0)
