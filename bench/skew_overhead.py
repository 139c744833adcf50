"""Request-path cost of train/serve skew sampling (online/skew.py): the same uncached
re-rank requests through three apps in one process, sampling off, at 1 % and at 100 %,
interleaved round by round; medians of per-round means.

Measured per request: wall time (what a client waits, including the GIL the skew thread
takes while it bins), and process CPU time (the request plus the background binning and
the skew log writer: the whole cost of the feature, wherever it runs). No sockets, no
gunicorn (bench/request_cpu.py's method). A small bundle from the service tests' factory
with a ranker and feature stats; --items sets the catalogue (ANN candidates per request).

    .venv/bin/python bench/skew_overhead.py [--requests 400 --rounds 7] [--out bench/results/skew_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from online.app import create_app  # noqa: E402
from tests.online.bundle_factory import build_bundle  # noqa: E402

RATES = {"off": 0.0, "1%": 0.01, "100%": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per app and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="skew-bench-"))
    build_bundle(tmp / "art", "run-a", n_users=args.users, n_items=args.items,
                 with_ranker=True, with_feature_stats=True)  # fmt: skip
    apps = {}
    for name, rate in RATES.items():
        art = tmp / f"art-{name.strip('%')}"
        art.mkdir()
        (art / "runs").symlink_to(tmp / "art" / "runs")
        (art / "CURRENT").write_text((tmp / "art" / "CURRENT").read_text())
        app = create_app({"artifacts": art, "reload_poll_seconds": 0, "scored_cache_size": 0,
                          "budget_ms": 10_000, "realtime": "memory", "request_log": False,
                          "skew_sample_rate": rate})  # fmt: skip
        app.extensions["recsys"].store.ensure_started()
        apps[name] = app.test_client()
    bodies = [json.dumps({"user_id": f"u{u}", "k": 20}) for u in range(args.users - 1)]
    for client in apps.values():  # warm every code path (and the skew threads)
        for body in bodies[:50]:
            client.post("/v1/recommendations", data=body, content_type="application/json")

    wall: dict[str, list[float]] = {n: [] for n in apps}
    cpu: dict[str, list[float]] = {n: [] for n in apps}
    served = ""
    for r in range(args.rounds):
        order = list(apps) if r % 2 == 0 else list(reversed(apps))
        for name in order:
            client = apps[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.requests):
                resp = client.post("/v1/recommendations", data=bodies[(i + r) % len(bodies)],
                                   content_type="application/json")  # fmt: skip
            skew = client.application.extensions["recsys"].skew
            if skew is not None:
                skew.wait_idle()  # the background work is charged to its phase
            wall[name].append((time.perf_counter() - w0) / args.requests * 1e6)
            cpu[name].append((time.process_time() - c0) / args.requests * 1e6)
            served = resp.get_json()["served_by"]
    assert served == "rerank", served
    base_wall, base_cpu = statistics.median(wall["off"]), statistics.median(cpu["off"])
    result = {
        "requests_per_round": args.requests, "rounds": args.rounds, "items": args.items,
        "served_by": served,
        "median_us_per_request": {
            n: {"wall": round(statistics.median(wall[n]), 1), "cpu": round(statistics.median(cpu[n]), 1),
                "wall_ratio": round(statistics.median(wall[n]) / base_wall, 3),
                "cpu_ratio": round(statistics.median(cpu[n]) / base_cpu, 3)}
            for n in apps
        },
    }
    for client in apps.values():
        client.application.extensions["recsys"].close()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
