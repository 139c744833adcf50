"""Readers of the server's state (/metrics, /proc) and the markdown report of load_test.py."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from shared.bundle_layout import MANIFEST

HOST = "127.0.0.1"


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def worker_memory(master: int) -> list[dict[str, Any]]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    out = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        pss = int(re.search(r"Pss:\s+(\d+)", rollup).group(1))  # type: ignore[union-attr]
        anon = int(re.search(r"Anonymous:\s+(\d+)", rollup).group(1))  # type: ignore[union-attr]
        out.append(
            {"pid": int(pid), "rss_mib": rss / 1024, "pss_mib": pss / 1024, "anon_mib": anon / 1024}
        )
    return out


def histograms(port: int, metric: str, label: str) -> dict[str, dict[float, float]]:
    """Cumulative buckets of one histogram from /metrics, by the value of one label."""
    text = get(port, "/metrics")[1].decode()
    out: dict[str, dict[float, float]] = {}
    for labels, value in re.findall(rf"{metric}_bucket\{{([^}}]*)\}} ([\d.e+]+)", text):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out.setdefault(parsed[label], {})[float(parsed["le"])] = float(value)
    return out


def counters(port: int) -> dict[str, float]:
    """served_by, fallback-reason and cache-lookup counters, keyed by their label text."""
    text = get(port, "/metrics")[1].decode()
    out: dict[str, float] = {}
    for name, labels, value in re.findall(
        r"(recsys_served_total|recsys_fallback_total|recsys_cache_requests_total)"
        r"\{([^}]*)\} ([\d.e+]+)",
        text,
    ):
        out[f"{name.removeprefix('recsys_').removesuffix('_total')} {labels}"] = float(value)
    return out


def stage_histograms(port: int) -> dict[str, dict[float, float]]:
    merged = histograms(port, "recsys_stage_seconds", "stage")
    for endpoint, buckets in histograms(port, "recsys_request_seconds", "endpoint").items():
        if endpoint != "/metrics":  # our own scrapes between phases
            merged[f"whole request {endpoint}"] = buckets
    return merged


def stage_table(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> list[tuple[str, int, str, str]]:
    """Per stage: count and p50/p99 upper bounds from the delta of cumulative buckets."""
    rows = []
    for stage, buckets in sorted(after.items()):
        delta = {le: v - before.get(stage, {}).get(le, 0.0) for le, v in buckets.items()}
        total = delta.get(float("inf"), 0.0)
        if total <= 0:
            continue

        def quantile(q: float, delta: dict[float, float] = delta, total: float = total) -> str:
            for le in sorted(delta):
                if delta[le] >= q * total:
                    return "> 1 s" if le == float("inf") else f"≤ {le * 1000:g} ms"
            return "?"

        rows.append((stage, int(total), quantile(0.5), quantile(0.99)))
    return rows


def gc_full_passes(
    port: int, before: dict[str, dict[float, float]] | None = None
) -> dict[str, dict[float, float]]:
    """Cumulative buckets of the worker GC pause histogram, or with `before`, the delta."""
    now = histograms(port, "recsys_gc_pause_seconds", "generation")
    if before is None:
        return now
    return {g: {le: v - before.get(g, {}).get(le, 0.0) for le, v in b.items()}
            for g, b in now.items()}  # fmt: skip


def _gc_cell(gc: dict[str, dict[float, float]]) -> str:
    """'n passes, max ≤ X ms' for generation 2 (n/a: code without the GC histogram)."""
    full = gc.get("2")
    if not full:
        return "n/a"
    n = int(full.get(float("inf"), 0.0))
    if n == 0:
        return "0"
    top = min((le for le, v in full.items() if v >= n), default=float("inf"))
    return f"{n}, max ≤ {top * 1000:g} ms" if top != float("inf") else f"{n}, max > 1 s"


def _ms(x: float) -> str:
    return f"{x:.2f}"


def report(
    args: argparse.Namespace,
    bundle: Path,
    fixed: dict[str, dict[str, dict[str, Any]]],
    saturation: dict[str, dict[str, dict[str, Any]]],
    memory: dict[str, list[dict[str, Any]]],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    uptime: str,
) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    labels = list(fixed)
    code = (f"; side by side with `{args.code}` ({args.code_label}), every phase alternating "
            "between the two servers" if args.code else "")  # fmt: skip
    lines = [
        "# Online service load test",
        "",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; "
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- bundle: `{manifest['run_id']}` ({manifest['row_counts']}), "
        f"index {manifest['index']['kind']} dim {manifest['index']['dim']}",
        f"- server: `recsys serve`, {args.workers} gunicorn workers, 1 thread each, "
        "OMP 1 thread, polling CURRENT every 1 s; client on the same machine (loopback), "
        f"{args.procs} open-loop processes{code}",
        f"- load average before/after: {load[0][0]:.2f} / {load[1][0]:.2f} (`uptime` before: "
        f"{uptime}); anything above ~0.5 before means other work shared the 2 cores",
        f"- command: `{' '.join(['.venv/bin/python', 'bench/load_test.py', *sys.argv[1:]])}`",
        "",
        f"## Fixed rate: {args.rate:g} req/s for {args.duration:g} s each "
        "(latency from scheduled send time, ms)",
        "",
        f"The reload phase publishes a new bundle every {args.reload_every:g} s (a clone of the "
        "live one under a new run id, then CURRENT replaced); each worker loads and swaps it "
        "while serving. GC: the worker's full (generation 2) collections during the phase.",
        "",
        "| code | phase | requests | errors | p50 | p99 | p99.9 | max | GC full passes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in fixed[labels[0]]:
        for label in labels:
            r = fixed[label][name]
            extra = (f" ({r['published']} published, {r['reloads']} worker loads)"
                     if "published" in r else "")  # fmt: skip
            lines.append(
                f"| {label} | {name}{extra} | {r['requests']} | {r['errors']} | {_ms(r['p50'])} | "
                f"{_ms(r['p99'])} | {_ms(r['p999'])} | {_ms(r['max'])} | {_gc_cell(r['gc'])} |"
            )
    steady, reloading = "full path /v1/recommendations", "full path, bundle republished"
    lines += ["", "Reload phase p99 against the steady full path's:", ""]
    for label in labels:
        reload_name = next((n for n in fixed[label] if n.startswith(reloading)), None)
        if reload_name and steady in fixed[label]:
            a, b = fixed[label][reload_name]["p99"], fixed[label][steady]["p99"]
            lines.append(f"- {label}: {a:.2f} / {b:.2f} ms = **{a / b:.2f}x**")
    if any(saturation.values()):
        lines += [
            "",
            f"## Saturation (wrk, 2 threads, {args.wrk_connections} connections, "
            f"{args.wrk_duration} s per round, {args.wrk_rounds} interleaved rounds; medians "
            "over the rounds, ms)",
            "",
            "| code | phase | req/s | p50 | p99 | p99.9 | max | p99/p50 | every round (req/s, p99) "
            "| errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in saturation[labels[0]]:
            for label in labels:
                r = saturation[label][name]
                every = " / ".join(f"{rps:.0f}, {p99:.1f}" for rps, p99 in r["rounds"])
                errs = f"{r['errors']}" + (f", sockets: {r['socket_errors']}"
                                           if r["socket_errors"] else "")  # fmt: skip
                lines.append(
                    f"| {label} | {name} | {r['rps']:.0f} | {_ms(r['p50'])} | {_ms(r['p99'])} | "
                    f"{_ms(r['p999'])} | {_ms(r['max'])} | **{r['ratio']:.1f}** | {every} "
                    f"| {errs} |"
                )
    lines += ["", "Answers by path (from /metrics counters, per phase):", ""]
    for label in labels:
        for name, r in fixed[label].items():
            answers = ", ".join(f"`{k}`: {v}" for k, v in sorted(r["answers"].items()))
            lines.append(f"- {label}, {name}: {answers or 'n/a'}")
    lines += [
        "",
        "## Server-side latency per stage, fixed-rate phases",
        "",
        "From the /metrics histograms (delta over each phase; values are bucket upper bounds).",
        "The gap between these and the client-side numbers above is queueing and CPU",
        "contention on the shared cores, not work done by the service.",
        "",
        "| code | phase | stage | observations | p50 | p99 |",
        "|---|---|---|---|---|---|",
        *[
            f"| {label} | {phase} | {s} | {n} | {p50} | {p99} |"
            for label in labels
            for phase, r in fixed[label].items()
            for s, n, p50, p99 in r["stages"]
        ],
        "",
        "## Memory per worker (after the run)",
        "",
        "| code | pid | RSS MiB | PSS MiB | anonymous MiB |",
        "|---|---|---|---|---|",
        *[
            f"| {label} | {m['pid']} | {m['rss_mib']:.0f} | {m['pss_mib']:.0f} | "
            f"{m['anon_mib']:.0f} |"
            for label in labels
            for m in memory[label]
        ],
        "",
        "PSS splits shared pages (the memory-mapped factor arrays, libraries) between the "
        "workers; RSS counts them in each. Anonymous is the worker's own heap: what the "
        "bundle's memory-mapped arrays do not cover and the kernel cannot reclaim.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
