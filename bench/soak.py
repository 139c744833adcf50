"""Soak test: the service at a steady open-loop rate for minutes, a new bundle every 30 s.

Starts `recsys serve` (2 workers, polling CURRENT every second) on a scratch copy of a
bundle, sends `--rate` req/s of full-path requests (/v1/recommendations, known users) for
`--minutes`, and every `--reload-every` s publishes a clone of the live bundle under a new
run id and points CURRENT at it, as the nightly publish does. Reports, per minute: requests,
errors, p50/p99/p99.9/max (from each request's scheduled send time), bundles loaded, and
each worker's RSS; with matplotlib, a plot of the same. Results: bench/results/soak.md
(+ soak.png). Usage:
  .venv/bin/python bench/soak.py [--artifacts ART] [--minutes 10] [--rate 150] [--reload-every 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bundle_clone import Republisher, scratch_artifacts
from load_report import get, worker_memory
from load_test import ROOT, _reloads, _uptime, bench_artifacts, request_bodies
from loadgen import Periodic, open_loop, start_server, summarize, warm_up

from shared.service_process import free_port


class MemorySampler(Periodic):
    """RSS per worker every `every` s: (seconds since start, {pid: RSS MiB})."""

    name = "rss"
    tick_first = True

    def __init__(self, master: int, every: float = 10.0) -> None:
        super().__init__(every)
        self.master = master
        self.samples: list[tuple[float, dict[int, float]]] = []

    def tick(self, elapsed: float) -> None:
        try:
            rss = {m["pid"]: m["rss_mib"] for m in worker_memory(self.master)}
            self.samples.append((elapsed, rss))
        except (OSError, AttributeError):  # a worker between exit and restart
            pass


def per_minute(result: dict[str, Any], minutes: int, published: list[float],
               memory: list[tuple[float, dict[int, float]]]) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    sent, lat, failed = result["sent"], result["lat"], result["failed_at"]
    for m in range(minutes):
        lo, hi = 60.0 * m, 60.0 * (m + 1)
        inside = (sent >= lo) & (sent < hi)
        rss = [s[1] for s in memory if s[0] < hi]
        rows.append({
            "minute": m + 1,
            "requests": int(inside.sum()) + int(((failed >= lo) & (failed < hi)).sum()),
            "errors": int(((failed >= lo) & (failed < hi)).sum()),
            **summarize(lat[inside]),
            "published": sum(1 for t in published if lo <= t < hi),
            "rss": rss[-1] if rss else {},
        })  # fmt: skip
    return rows


def plot(rows: list[dict[str, Any]], memory: list[tuple[float, dict[int, float]]],
         published: list[float], out: Path) -> bool:  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = [r["minute"] for r in rows]
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
        ax1.plot(x, [r[key] for r in rows], marker="o", label=label)
    ax1.set_yscale("log")
    ax1.set_ylabel("latency per minute, ms")
    ax1.legend(loc="upper left", ncol=4)
    pids = sorted({pid for _, rss in memory for pid in rss})
    for pid in pids:
        pts = [(t / 60.0, rss[pid]) for t, rss in memory if pid in rss]
        ax2.plot([p[0] + 0.0 for p in pts], [p[1] for p in pts], label=f"worker {pid}")
    for t in published:
        ax2.axvline(t / 60.0, color="grey", alpha=0.2)
    ax2.set_xlabel("minute (grey lines: a new bundle published)")
    ax2.set_ylabel("RSS MiB")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--reload-every", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    args = parser.parse_args()

    work, given = bench_artifacts(args.artifacts)
    from shared.bundle import current_bundle

    bundle = current_bundle(given)
    bodies = request_bodies(bundle)["full"]
    art = scratch_artifacts(given, work / "art")
    port = free_port()
    uptime_before, load_before = _uptime(), os.getloadavg()
    server = start_server(art, port, args.workers, work / "server.log")
    try:
        warm_up(port, bodies[:200])
        memory = MemorySampler(server.pid).start()
        republisher = Republisher(art, args.reload_every).start()
        try:
            result = open_loop(port, "POST", "/v1/recommendations", bodies, args.rate,
                               60.0 * args.minutes, args.procs)  # fmt: skip
        finally:
            republisher.stop()
            memory.stop()
        loads = int(_reloads(port))
        serving = json.loads(get(port, "/readyz")[1])["bundle"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    published = [t for t, _ in republisher.published]
    rows = per_minute(result, args.minutes, published, memory.samples)
    png = args.out.with_suffix(".png")
    plotted = plot(rows, memory.samples, published, png)
    report(args, result, rows, memory.samples, published, loads, serving,
           (uptime_before, load_before, os.getloadavg()), png if plotted else None)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, result: dict[str, Any], rows: list[dict[str, Any]],
           memory: list[tuple[float, dict[int, float]]], published: list[float], loads: int,
           serving: str, load: tuple[str, tuple[float, ...], tuple[float, ...]],
           png: Path | None) -> None:  # fmt: skip
    pids = sorted({pid for _, rss in memory for pid in rss})
    first = {pid: next(rss[pid] for _, rss in memory if pid in rss) for pid in pids}
    last = {pid: [rss[pid] for _, rss in memory if pid in rss][-1] for pid in pids}
    lines = [
        "# Soak: steady load with a new bundle every "
        f"{args.reload_every:g} s",
        "",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; "
        f"{os.cpu_count()} CPUs; `uptime` before: {load[0]}; load average after: "
        f"{load[2][0]:.2f}",
        f"- command: `{' '.join(['.venv/bin/python', 'bench/soak.py', *sys.argv[1:]])}`",
        f"- {args.rate:g} req/s open loop (full path, known users) for {args.minutes} min from "
        f"{args.procs} client processes; {args.workers} workers polling CURRENT every 1 s",
        f"- {len(published)} bundles published, {loads} worker loads in all (start-up "
        f"included); serving `{serving}` at the end",
        "",
        "## Whole run (ms)",
        "",
        "| requests | errors | p50 | p99 | p99.9 | max |",
        "|---|---|---|---|---|---|",
        f"| {result['requests']} | {result['errors']} | {result['p50']:.2f} | "
        f"{result['p99']:.2f} | {result['p999']:.2f} | {result['max']:.2f} |",
        "",
        "## Per minute (ms; RSS MiB per worker at the minute's end)",
        "",
        "| minute | requests | errors | p50 | p99 | p99.9 | max | bundles published | RSS |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['minute']} | {r['requests']} | {r['errors']} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['p999']:.2f} | {r['max']:.2f} | {r['published']} | "
            + " / ".join(f"{v:.0f}" for _, v in sorted(r["rss"].items())) + " |"
            for r in rows
        ],
        "",
        "RSS per worker, first sample -> last: "
        + ", ".join(f"{pid}: {first[pid]:.0f} -> {last[pid]:.0f} MiB" for pid in pids),
    ]
    if png is not None:
        lines += ["", f"![latency per minute and RSS per worker]({png.name})"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
