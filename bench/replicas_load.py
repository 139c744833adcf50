"""Load test through HAProxy (online/replicas): 2 replicas vs 1, and direct vs one LB hop.

One run starts 2 `recsys serve` replicas (1 gunicorn worker each, the same bundle) behind
HAProxy and, in interleaved rounds (each figure is the median round):
  1. saturation (wrk, closed loop, same connections): through HAProxy with both replicas,
     through HAProxy with srv2 in maintenance (1 replica), and direct to srv1;
  2. a fixed open-loop rate (no coordinated omission) direct to srv1 vs through HAProxy to
     srv1 alone: the hop's p50/p99 cost at light load;
  3. a rolling restart of both replicas during an open-loop phase through HAProxy: sent,
     ok, failed.
On a 2-core machine the replicas, HAProxy and the load generator share the cores: 2
replicas cannot double throughput there, the figures to read are the errors (0) and the
hop cost. Results: bench/results/replicas.md and .json. Usage:
  .venv/bin/python bench/replicas_load.py [--artifacts ART] [--rounds 3] [--wrk-duration 8]
Without --artifacts a synthetic bundle is built (tests/online/bundle_factory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from bundle_clone import scratch_artifacts
from load_test import _uptime, bench_artifacts, median_round, request_bodies
from loadgen import open_loop, run_wrk, warm_up

from online.replicas.cluster import Cluster, ClusterSettings
from online.replicas.haproxy_config import BACKEND
from shared.bundle import current_bundle

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/recommendations"


def _open(port: int, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    r = open_loop(port, "POST", PATH, bodies, args.rate, args.duration, args.procs)
    return {k: r[k] for k in ("requests", "errors", "achieved_rps", "p50", "p99", "p999", "max")}


def _median(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(np.median([r[k] for r in runs])) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    return out


def _roll_under_load(cluster: Cluster, bodies: list[bytes],
                     args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Open loop through HAProxy for long enough to cover a rolling restart of both."""
    timings: list[Any] = []
    roller = threading.Thread(target=lambda: timings.extend(cluster.rolling_restart()))
    roller.start()
    r = open_loop(cluster.port, "POST", PATH, bodies, args.rate, args.roll_duration, args.procs)
    roller.join()
    return {"sent": r["requests"], "ok": r["requests"] - r["errors"], "failed": r["errors"],
            "p50": r["p50"], "p99": r["p99"], "max": r["max"],
            "restarts_s": [round(t.drain_s + t.restart_s + t.back_s, 2) for t in timings]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0, help="open-loop req/s")
    parser.add_argument("--duration", type=float, default=8.0, help="open-loop phase, s")
    parser.add_argument("--roll-duration", type=float, default=25.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--conns-per-thread", type=int, default=4, help="HAProxy maxconn "
                        "per replica thread")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replicas.md")
    args = parser.parse_args()

    work, given = bench_artifacts(args.artifacts)
    art = scratch_artifacts(given, work / "art")
    bodies = request_bodies(current_bundle(art))["full"]
    load_before, uptime_before = os.getloadavg(), _uptime()
    settings = ClusterSettings(artifacts=art, state_dir=work / "state", replicas=2, workers=1,
                               conns_per_thread=args.conns_per_thread, serve_args=("--log-level", "WARNING"))  # fmt: skip
    sat: dict[str, list[dict[str, Any]]] = {"haproxy, 2 replicas": [], "haproxy, 1 replica": [],
                                            "direct, 1 replica": []}  # fmt: skip
    hop: dict[str, list[dict[str, Any]]] = {"direct": [], "haproxy": []}
    with Cluster(settings) as cluster:
        direct = cluster.ports[0]
        for port in cluster.ports:
            warm_up(port, bodies[:200])
        for _ in range(args.rounds):
            cluster.api.set_state(BACKEND, "srv2", "ready")
            cluster.api.wait_for(BACKEND, "srv2", "UP", 30, "UP")
            sat["haproxy, 2 replicas"].append(run_wrk(cluster.port, PATH, bodies,
                                                      args.wrk_duration, work, args.connections))  # fmt: skip
            cluster.api.set_state(BACKEND, "srv2", "maint")
            sat["haproxy, 1 replica"].append(run_wrk(cluster.port, PATH, bodies,
                                                     args.wrk_duration, work, args.connections))  # fmt: skip
            sat["direct, 1 replica"].append(run_wrk(direct, PATH, bodies, args.wrk_duration,
                                                    work, args.connections))  # fmt: skip
            hop["direct"].append(_open(direct, bodies, args))
            hop["haproxy"].append(_open(cluster.port, bodies, args))
        cluster.api.set_state(BACKEND, "srv2", "ready")
        cluster.api.wait_for(BACKEND, "srv2", "UP", 30, "UP")
        roll = _roll_under_load(cluster, bodies, args)
    results = {
        "saturation": {k: median_round(v) for k, v in sat.items()},
        "hop": {k: _median(v, ("p50", "p99", "p999", "achieved_rps")) for k, v in hop.items()},
        "roll": roll,
        "args": {k: str(v) for k, v in vars(args).items()},
        "load_before": load_before, "load_after": os.getloadavg(),
        "uptime_before": uptime_before, "cores": os.cpu_count(),
    }  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.write_text(render(results))
    print(render(results))


def render(r: dict[str, Any]) -> str:
    s, h, roll = r["saturation"], r["hop"], r["roll"]
    two, one = s["haproxy, 2 replicas"], s["haproxy, 1 replica"]
    shown = ("rounds", "wrk_duration", "connections", "rate", "duration", "roll_duration")
    flags = " ".join(f"--{k.replace('_', '-')} {r['args'][k]}" for k in shown)
    lines = [
        "# Replicas behind HAProxy: load test",
        "",
        f"`.venv/bin/python bench/replicas_load.py {flags}`"
        f" ({r['cores']} cores, shared; load average before {r['load_before'][0]:.2f}, after "
        f"{r['load_after'][0]:.2f}). Each replica: 1 gunicorn worker, 1 thread. Medians of "
        "the rounds, every phase interleaved in each round; timings on a shared 2-core "
        "machine are noisy.",
        "",
        "## Saturation (wrk, POST /v1/recommendations, known users)",
        "",
        "| path | req/s | p50 ms | p99 ms | errors | rounds (req/s, p99) |",
        "|---|---|---|---|---|---|",
        *[f"| {k} | {v['rps']:.0f} | {v['p50']:.2f} | {v['p99']:.2f} | "
          f"{v['errors']}{' ' + v['socket_errors'] if v['socket_errors'] else ''} | "
          f"{', '.join(f'{a:.0f}/{b:.1f}' for a, b in v['rounds'])} |" for k, v in s.items()],
        "",
        f"2 replicas / 1 replica through HAProxy: **{two['rps'] / one['rps']:.2f}x** req/s; "
        f"HAProxy / direct, 1 replica: {one['rps'] / s['direct, 1 replica']['rps']:.2f}x.",
        "",
        f"## The hop at light load (open loop, {r['args']['rate']} req/s, 1 replica)",
        "",
        "| path | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v['p50']:.2f} | {v['p99']:.2f} | {v['p999']:.2f} | {v['errors']} |"
          for k, v in h.items()],
        "",
        f"HAProxy adds **{h['haproxy']['p50'] - h['direct']['p50']:+.2f} ms at p50** and "
        f"{h['haproxy']['p99'] - h['direct']['p99']:+.2f} ms at p99.",
        "",
        f"## Rolling restart under load (open loop, {r['args']['rate']} req/s through HAProxy)",
        "",
        f"sent {roll['sent']}, ok {roll['ok']}, **failed {roll['failed']}**; p50 "
        f"{roll['p50']:.2f} ms, p99 {roll['p99']:.2f} ms, max {roll['max']:.1f} ms; each "
        f"replica out of rotation for {', '.join(f'{t} s' for t in roll['restarts_s'])}.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
