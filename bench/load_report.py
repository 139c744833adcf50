"""Readers of the server's state (/metrics, /proc) and the markdown report of load_test.py."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
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


def report(
    args: argparse.Namespace,
    bundle: Path,
    fixed: dict[str, dict[str, Any]],
    saturation: dict[str, dict[str, Any]],
    stages: dict[str, list[tuple[str, int, str, str]]],
    memory: list[dict[str, Any]],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    lines = [
        "# Online service load test",
        "",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; "
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- bundle: `{manifest['run_id']}` ({manifest['row_counts']}), "
        f"index {manifest['index']['kind']} dim {manifest['index']['dim']}",
        f"- server: `recsys serve`, {args.workers} gunicorn gthread workers, 1 thread each, "
        "OMP 1 thread; client on the same machine (loopback), "
        f"{args.procs} open-loop processes",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(anything above ~0.5 before means other work shared the 2 cores)",
        "",
        f"## Fixed rate: {args.rate:g} req/s for {args.duration:g} s each "
        "(latency from scheduled send time)",
        "",
        "| phase | requests | errors | achieved req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in fixed.items():
        lines.append(
            f"| {name} | {r['requests']} | {r['errors']} | {r['achieved_rps']:.1f} | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['max']:.2f} |"
        )
    lines += ["", "Answers by path (from /metrics counters, per phase):", ""]
    for name, r in fixed.items():
        answers = ", ".join(f"`{k}`: {v}" for k, v in sorted(r["answers"].items()))
        lines.append(f"- {name}: {answers or 'n/a'}")
    if saturation:
        ping = saturation["trivial GET /v1/ping"]["rps"] or 1.0
        lines += [
            "",
            f"## Saturation (wrk, 2 threads, 8 connections, {args.wrk_duration} s each, "
            f"{args.wrk_rounds} interleaved rounds; the median round per phase)",
            "",
            "| phase | req/s (median) | vs ping | every round | p50 | p99 | non-2xx | socket errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in saturation.items():
            every = " / ".join(f"{x:.0f}" for x in r.get("rounds", [r["rps"]]))
            lines.append(
                f"| {name} | {r['rps']:.0f} | {r['rps'] / ping:.2f} | {every} | {r['p50']} "
                f"| {r['p99']} | {r['errors']} | {r['socket_errors'] or 'none'} |"
            )
    lines += [
        "",
        "## Server-side latency per stage, fixed-rate phases",
        "",
        "From the /metrics histograms (delta over each phase; values are bucket upper bounds).",
        "The gap between these and the client-side numbers above is queueing and CPU",
        "contention on the shared cores, not work done by the service.",
        "",
        "| phase | stage | observations | p50 | p99 |",
        "|---|---|---|---|---|",
        *[
            f"| {phase} | {s} | {n} | {p50} | {p99} |"
            for phase, rows in stages.items()
            for s, n, p50, p99 in rows
        ],
        "",
        "## Memory per worker (after the run)",
        "",
        "| pid | RSS MiB | PSS MiB | anonymous MiB |",
        "|---|---|---|---|",
        *[
            f"| {m['pid']} | {m['rss_mib']:.0f} | {m['pss_mib']:.0f} | {m['anon_mib']:.0f} |"
            for m in memory
        ],
        "",
        "PSS splits shared pages (the memory-mapped factor arrays, libraries) between the "
        "workers; RSS counts them in each. Anonymous is the worker's own heap: what the "
        "bundle's memory-mapped arrays do not cover and the kernel cannot reclaim.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
