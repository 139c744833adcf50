"""Load test of the online service from other processes, loopback only, bounded.

One run starts `recsys serve` (2 workers) on a scratch copy of a bundle and measures:
  1. open loop at a fixed rate (default 200 req/s): /v1/ping (the framework floor), the full
     path (/v1/recommendations, known users), the full path with the scored-candidates cache
     always missed, the fallback path (unknown users -> popular), and the full path while a
     new bundle is published every few seconds (hot reload); p50/p99/p99.9/max from each
     request's scheduled send time (no coordinated omission);
  2. saturation with wrk (4 connections, 2 threads): full path vs ping, p50/p99/p99.9/max,
     over interleaved rounds (each phase's median round);
  3. per phase, the garbage collector's full passes and the per-stage latency from the
     /metrics histograms; RSS/PSS per worker from /proc.
With `--realtime` the two servers are real-time off and real-time on (SQLite, every known
user holding 20 recent plays and 3 dislikes in ART/runtime/realtime.sqlite3), same code
(this checkout, or --code's), and the per-request cost of the store is the difference;
the ratios also go to bench/results/realtime/<date>.json.
With `--experiment` the two servers are no experiments file vs a two-arm 50/50 experiment
whose treatment arm serves a second bundle (a clone of the bench bundle published under
another run id), same code and artifacts; only ping and the full path are measured, and the
ratios (throughput, latency, RSS/PSS per worker) go to bench/results/experiments_overhead.md.
With `--code OTHER_CHECKOUT` a second server runs that checkout's code on its own copy of the
same bundle and every phase alternates between the two: old and new code side by side in
one run, under the same load on the machine.
Results go to bench/results/service.md. Usage:
  .venv/bin/python bench/load_test.py [--artifacts ART] [--code DIR] [--rate 200] [--duration 15]
Without --artifacts a synthetic bundle is built (tests/online/bundle_factory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from bundle_clone import Republisher, scratch_artifacts
from load_report import (
    counters,
    gc_full_passes,
    get,
    report,
    stage_histograms,
    stage_table,
    worker_memory,
)
from loadgen import open_loop, run_wrk, start_server, warm_up

from shared.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]
REALTIME_LABELS = ("realtime off", "realtime sqlite")
EXPERIMENT_LABELS = ("no experiment", "two-arm experiment")
ARM_RUN = "bench-arm"
RELOAD_PHASE = "full path, bundle republished during the phase"


def build_synthetic(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.online.bundle_factory import build_bundle

    artifacts = tmp / "synthetic"
    build_bundle(artifacts, "bench", n_users=5000, n_items=10000, dim=64)
    return artifacts


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


def request_bodies(bundle: Path) -> dict[str, list[bytes]]:
    picked = known_users(bundle)
    return {
        "full": [json.dumps({"user_id": u, "k": 20}).encode() for u in picked],
        "cold": [json.dumps({"user_id": f"bench-unknown-{i}", "k": 20}).encode()
                 for i in range(500)],
        # The work of `full` in a context never seen before (a unique device string), so
        # the per-user scored-candidates cache misses on every request.
        "uncached": [json.dumps({"user_id": str(picked[i % len(picked)]), "k": 20,
                                 "context": {"device": f"bench-{i}"}}).encode()
                     for i in range(20_000)],
    }  # fmt: skip


def seed_realtime(art: Path, users: np.ndarray) -> None:
    """State for every user the load test asks for: 20 plays and 3 dislikes in the last
    hour, written with the store the server will read (its file under ART/runtime)."""
    import datetime as dt

    from online.realtime.sqlite_store import FILE_NAME, RUNTIME_DIR, SqliteStore
    from shared.events import FeedbackEvent

    store = SqliteStore(art / RUNTIME_DIR / FILE_NAME)
    now = time.time()
    events = []
    for u, user in enumerate(users):
        for n in range(23):
            ts = dt.datetime.fromtimestamp(now - 3600 + n, dt.UTC)
            events.append(FeedbackEvent(f"seed-{u}-{n}", "play" if n < 20 else "dislike",
                                        str(user), f"m{(u * 13 + n * 7) % 10000}", ts, ts))
    store.record(events)
    store.close()


def _lookups(port: int) -> float:
    """Real-time state lookups the server's workers made so far."""
    text = get(port, "/metrics")[1].decode()
    return sum(float(v) for v in
               re.findall(r"recsys_realtime_lookup_seconds_count\{[^}]*\} ([\d.e+]+)", text))


def realtime_ratios(
    fixed: dict[str, dict[str, dict[str, Any]]],
    saturation: dict[str, dict[str, dict[str, Any]]],
    lookups: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """On vs off, per phase: p50/p99 at the fixed rate, throughput under wrk."""
    on, off = REALTIME_LABELS[1], REALTIME_LABELS[0]
    out: dict[str, Any] = {"command": " ".join(["bench/load_test.py", *sys.argv[1:]]),
                           "lookups_by_server": lookups, "fixed_rate": {}, "saturation": {}}
    for name in fixed[on]:
        a, b = fixed[on][name], fixed[off][name]
        out["fixed_rate"][name] = {
            "p50_ms_on": a.get("p50"), "p50_ms_off": b.get("p50"),
            "p99_ms_on": a.get("p99"), "p99_ms_off": b.get("p99"),
        }
    for name in saturation.get(on, {}):
        a, b = saturation[on][name], saturation[off][name]
        out["saturation"][name] = {"rps_on": a["rps"], "rps_off": b["rps"],
                                   "rps_ratio_on_off": round(a["rps"] / b["rps"], 3)
                                   if b["rps"] else None}  # fmt: skip
    return out


def declare_experiment(art: Path) -> None:
    """A clone of the served bundle as ARM_RUN (CURRENT unchanged) and a running 50/50
    experiment whose treatment arm serves it: every worker holds both bundles."""
    from bundle_clone import _copy_run

    from shared import experiments as exp
    from shared.bundle import current_bundle, run_dir

    _copy_run(current_bundle(art), run_dir(art, ARM_RUN), ARM_RUN)
    exp.write(art, exp.ExperimentsFile.model_validate({"experiments": [{
        "name": "bench-canary", "layer": "ranking", "salt": "bench-canary-1",
        "status": "running", "arms": [
            {"name": "control", "share": 0.5},
            {"name": "canary", "share": 0.5, "treatment": {"bundle": ARM_RUN}}]}]}))  # fmt: skip


def _arm_answers(port: int) -> dict[str, float]:
    """Requests per arm the server's workers served (the experiment really split them)."""
    text = get(port, "/metrics")[1].decode()
    out: dict[str, float] = {}
    for labels, v in re.findall(r"recsys_experiment_assigned_total\{([^}]*)\} ([\d.e+]+)", text):
        arm = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("arm", "?")
        out[arm] = out.get(arm, 0.0) + float(v)
    return out


def experiment_report(
    saturation: dict[str, dict[str, dict[str, Any]]],
    fixed: dict[str, dict[str, dict[str, Any]]],
    memory: dict[str, list[dict[str, Any]]],
    arms: dict[str, dict[str, float]],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict[str, Any]:
    """Experiment vs none, side by side: wrk full path and ping, memory per worker."""
    off, on = EXPERIMENT_LABELS
    full, ping = "full path /v1/recommendations", "trivial GET /v1/ping"
    out: dict[str, Any] = {"command": " ".join(["bench/load_test.py", *sys.argv[1:]]),
                           "load_before": load[0], "load_after": load[1],
                           "arms_served": arms, "saturation": {}, "fixed_rate": {},
                           "memory": {}}  # fmt: skip
    for name in (full, ping):
        if name in saturation.get(on, {}):
            a, b = saturation[on][name], saturation[off][name]
            out["saturation"][name] = {
                "off": {k: b[k] for k in ("rps", "p50", "p99", "p999")},
                "on": {k: a[k] for k in ("rps", "p50", "p99", "p999")},
                "rps_ratio_on_off": round(a["rps"] / b["rps"], 3) if b["rps"] else None,
                "rounds_off": b["rounds"], "rounds_on": a["rounds"],
            }
        a, b = fixed[on][name], fixed[off][name]
        out["fixed_rate"][name] = {"off": {k: b[k] for k in ("p50", "p99", "p999")},
                                   "on": {k: a[k] for k in ("p50", "p99", "p999")}}  # fmt: skip
    for label in EXPERIMENT_LABELS:
        workers = memory[label]
        out["memory"][label] = {
            "workers": workers,
            "rss_mib": float(np.median([w["rss_mib"] for w in workers])),
            "pss_mib": float(np.median([w["pss_mib"] for w in workers])),
            "anon_mib": float(np.median([w["anon_mib"] for w in workers])),
        }
    m_on, m_off = out["memory"][on], out["memory"][off]
    out["memory_ratio_on_off"] = {k: round(m_on[k] / m_off[k], 3)
                                  for k in ("rss_mib", "pss_mib", "anon_mib")}  # fmt: skip
    return out


def _reloads(port: int) -> float:
    """Bundles loaded by the server's workers so far (every worker loads each one)."""
    text = get(port, "/metrics")[1].decode()
    pattern = r'recsys_bundle_reloads_total\{result="loaded"\} ([\d.e+]+)'
    return sum(float(v) for v in re.findall(pattern, text))


def measure_phase(
    port: int, art: Path, phase: tuple[str, str, list[bytes], bool], args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """One open-loop phase against one server, with its /metrics deltas."""
    method, path, bodies, reloading = phase[0], phase[1], phase[2], phase[3]
    before, counts = stage_histograms(port), counters(port)
    gc_before, reloads_before = gc_full_passes(port), _reloads(port)
    republisher = Republisher(art, args.reload_every).start() if reloading else None
    try:
        result = open_loop(port, method, path, bodies, args.rate, args.duration, args.procs)
    finally:
        if republisher is not None:
            republisher.stop()
    result["stages"] = stage_table(before, stage_histograms(port))
    result["answers"] = {k: int(v - counts.get(k, 0.0)) for k, v in counters(port).items()
                         if v - counts.get(k, 0.0) > 0}  # fmt: skip
    result["gc"] = gc_full_passes(port, gc_before)
    result["reloads"] = int(_reloads(port) - reloads_before)
    if republisher is not None:
        result["published"] = len(republisher.published)
    del result["sent"], result["lat"], result["failed_at"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--code", type=Path, help="another checkout, measured side by side")
    parser.add_argument("--code-label", default="baseline")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--reload-every", type=float, default=3.0,
                        help="seconds between published bundles in the reload phase")
    parser.add_argument("--wrk-duration", type=int, default=8)
    parser.add_argument("--wrk-rounds", type=int, default=3, help="interleaved wrk rounds")
    parser.add_argument("--wrk-connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--procs", type=int, default=4, help="open-loop client processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.md")
    parser.add_argument("--realtime", action="store_true",
                        help="two servers: real-time store off vs on (SQLite, users with state)")
    parser.add_argument("--experiment", action="store_true",
                        help="two servers: no experiments file vs a two-arm two-bundle experiment")
    args = parser.parse_args()

    work, given = bench_artifacts(args.artifacts)
    from shared.bundle import current_bundle

    bundle = current_bundle(given)
    bodies = request_bodies(bundle)
    codes: dict[str, Path | None] = {"this checkout": None}
    if args.code is not None:
        codes[args.code_label] = args.code.resolve()
    envs: dict[str, dict[str, str]] = {}
    if args.realtime:
        code = None if args.code is None else args.code.resolve()
        codes = {label: code for label in REALTIME_LABELS}
        envs = {REALTIME_LABELS[0]: {"RECSYS_REALTIME": "off"},
                REALTIME_LABELS[1]: {"RECSYS_REALTIME": "sqlite"}}  # fmt: skip
    if args.experiment:
        codes = {label: None if args.code is None else args.code.resolve()
                 for label in EXPERIMENT_LABELS}  # fmt: skip
        if args.out == parser.get_default("out"):
            args.out = ROOT / "bench" / "results" / "experiments_overhead-phases.md"
    load_before, uptime_before = os.getloadavg(), _uptime()
    servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for label, code in codes.items():
            art = scratch_artifacts(given, work / f"art-{len(servers)}")
            if envs.get(label, {}).get("RECSYS_REALTIME") == "sqlite":
                seed_realtime(art, known_users(bundle))
            if args.experiment and label == EXPERIMENT_LABELS[1]:
                declare_experiment(art)
            port = free_port()
            log = work / f"server-{len(servers)}.log"
            servers[label] = (start_server(art, port, args.workers, log, code,
                                           extra_env=envs.get(label)), port, art)
            warm_up(port, bodies["full"][:200] + bodies["cold"][:20])
        phases = {
            "trivial GET /v1/ping": ("GET", "/v1/ping", [], False),
            "full path /v1/recommendations": ("POST", "/v1/recommendations", bodies["full"], False),
            "full path, scored cache missed": ("POST", "/v1/recommendations", bodies["uncached"],
                                               False),
            "fallback (unknown user -> popular)": ("POST", "/v1/recommendations", bodies["cold"],
                                                   False),
            RELOAD_PHASE: ("POST", "/v1/recommendations", bodies["full"], True),
        }  # fmt: skip
        if args.experiment:  # what the experiment changes: the full path (ping: the control)
            phases = {k: phases[k] for k in list(phases)[:2]}
        fixed: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in servers}
        for name, phase in phases.items():  # phase by phase, alternating the servers
            for label, (_, port, art) in servers.items():
                fixed[label][name] = measure_phase(port, art, phase, args, work)
        saturation: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in servers}
        if shutil.which("wrk"):
            wrk_phases = {k: phases[k] for k in list(phases)[:2]}  # ping, full path
            rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for _ in range(args.wrk_rounds):
                for name, (_, path, phase_bodies, _) in wrk_phases.items():
                    for label, (_, port, _) in servers.items():
                        rounds.setdefault((label, name), []).append(run_wrk(
                            port, path, phase_bodies, args.wrk_duration, work,
                            connections=args.wrk_connections))  # fmt: skip
            for (label, name), runs in rounds.items():
                saturation[label][name] = median_round(runs)
        memory = {label: worker_memory(proc.pid) for label, (proc, _, _) in servers.items()}
        lookups = {label: _lookups(port) for label, (_, port, _) in servers.items()}
        arms = {label: _arm_answers(port) for label, (_, port, _) in servers.items()}
    finally:
        for proc, _, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in servers.values():
            proc.wait(timeout=30)
    load_after = os.getloadavg()
    report(args, bundle, fixed, saturation, memory, (load_before, load_after), uptime_before)
    if args.realtime:
        ratios = realtime_ratios(fixed, saturation, lookups, args)
        if not lookups[REALTIME_LABELS[1]]:
            print("WARNING: the real-time server made no state lookups: this code does not "
                  "open the store in create_app; the two servers measured the same path")
        out = ROOT / "bench" / "results" / "realtime" / f"{time.strftime('%Y-%m-%d')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged["load_test"] = ratios
        out.write_text(json.dumps(merged, indent=2) + "\n")
        print(json.dumps(ratios, indent=2))
    if args.experiment:
        overhead = experiment_report(saturation, fixed, memory, arms, (load_before, load_after))
        out = ROOT / "bench" / "results" / "experiments_overhead.json"
        out.write_text(json.dumps(overhead, indent=2) + "\n")
        print(json.dumps({k: v for k, v in overhead.items() if k != "memory"}, indent=2))
        print(json.dumps(overhead["memory_ratio_on_off"]))
    shutil.rmtree(work, ignore_errors=True)


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (throughput and every percentile separately),
    plus every round's throughput and p99 so the spread shows."""
    out: dict[str, Any] = {k: float(np.median([r[k] for r in runs]))
                           for k in ("rps", "p50", "p99", "p999", "max")}  # fmt: skip
    out["ratio"] = float(np.median([r["p99"] / r["p50"] for r in runs if r["p50"] > 0]))
    out["rounds"] = [(r["rps"], r["p99"]) for r in runs]
    out["errors"] = sum(r["errors"] for r in runs)
    out["socket_errors"] = "; ".join(r["socket_errors"] for r in runs if r["socket_errors"])
    return out


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
