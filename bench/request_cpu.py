"""CPU time per request of the service's code, in one process, through the Flask test client.

Compares the trivial endpoint with the full path (scored cache warm: known users cycled) and
the uncached full path (a new context per request), as `time.process_time()` per request,
median of interleaved rounds. No sockets, no gunicorn: it isolates the application's own
cost, so two versions of the code can be compared on the same bundle one after the other
(e.g. `git stash; python bench/request_cpu.py ...; git stash pop`).

    .venv/bin/python bench/request_cpu.py --artifacts /tmp/recsys-bench/art-mls [--label new]

With `--experiment` it compares, in the same process and interleaved round by round, an app
with no experiments file against one serving a two-arm 50/50 experiment whose treatment arm
is a second bundle (a clone of CURRENT under another run id, so each arm holds its own
memory-mapped bundle): the CPU cost per request of assignment, the arm's bundle and the
assignments column of the served log, free of the other load on the machine that makes
wall-clock throughput on a shared host noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow.parquet as pq  # noqa: E402

from online.app import create_app  # noqa: E402
from shared.bundle import current_bundle  # noqa: E402
from shared.bundle_layout import RECOMMENDATIONS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1500, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="")
    parser.add_argument("--experiment", action="store_true",
                        help="no experiment vs a two-arm two-bundle experiment, interleaved")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/recsys-request-cpu"))
    args = parser.parse_args()
    if args.experiment:
        experiment_overhead(args)
        return

    app = create_app({"artifacts": args.artifacts, "reload_poll_seconds": 0, "request_log": True})
    client = app.test_client()
    table = pq.read_table(current_bundle(args.artifacts) / RECOMMENDATIONS, columns=["user_id"])
    users = [str(u) for u in table.column("user_id").unique().to_pylist()]
    client.get("/readyz")
    cached = [json.dumps({"user_id": u, "k": 20}) for u in users]
    fresh = iter(
        json.dumps({"user_id": users[i % len(users)], "k": 20, "context": {"device": f"d{i}"}})
        for i in range(args.requests * args.rounds)
    )
    for body in cached:  # warm the scored cache and every code path
        client.post("/v1/recommendations", data=body, content_type="application/json")

    def phase(kind: str) -> float:
        start = time.process_time()
        for i in range(args.requests):
            if kind == "ping":
                client.get("/v1/ping")
            else:
                body = cached[i % len(cached)] if kind == "cached" else next(fresh)
                client.post("/v1/recommendations", data=body, content_type="application/json")
        return (time.process_time() - start) / args.requests * 1e6

    samples: dict[str, list[float]] = {"ping": [], "cached": [], "uncached": []}
    for _ in range(args.rounds):
        for kind, values in samples.items():
            values.append(phase(kind))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(json.dumps({"label": args.label, "cpu_us_per_request": {k: round(v) for k, v in med.items()},
                      "ping_over_cached": round(med["ping"] / med["cached"], 3),
                      "ping_over_uncached": round(med["ping"] / med["uncached"], 3)}))


def experiment_overhead(args: argparse.Namespace) -> None:
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bundle_clone import scratch_artifacts
    from load_test import declare_experiment

    shutil.rmtree(args.scratch, ignore_errors=True)
    roots = {"no experiment": scratch_artifacts(args.artifacts, args.scratch / "plain"),
             "two-arm experiment": scratch_artifacts(args.artifacts, args.scratch / "experiment")}
    declare_experiment(roots["two-arm experiment"])
    clients = {}
    for label, root in roots.items():
        app = create_app({"artifacts": root, "reload_poll_seconds": 0, "request_log": True})
        clients[label] = app.test_client()
        clients[label].get("/readyz")
    table = pq.read_table(current_bundle(args.artifacts) / RECOMMENDATIONS, columns=["user_id"])
    users = [str(u) for u in table.column("user_id").unique().to_pylist()]
    cached = [json.dumps({"user_id": u, "k": 20}) for u in users]
    arms: dict[str, int] = {}
    for label, client in clients.items():
        for body in cached:  # warm every path and both arms' scored caches
            answer = client.post("/v1/recommendations", data=body, content_type="application/json")
            arm = answer.get_json().get("arm")
            if label != "no experiment":
                arms[str(arm)] = arms.get(str(arm), 0) + 1
    counter = iter(range(10**9))

    def phase(client: object, kind: str) -> float:
        start = time.process_time()
        for i in range(args.requests):
            if kind == "cached":
                body = cached[i % len(cached)]
            else:
                n = next(counter)
                body = json.dumps({"user_id": users[n % len(users)], "k": 20,
                                   "context": {"device": f"d{n}"}})  # fmt: skip
            client.post("/v1/recommendations", data=body, content_type="application/json")  # type: ignore[attr-defined]
        return (time.process_time() - start) / args.requests * 1e6

    samples = {(label, kind): [] for label in clients for kind in ("cached", "uncached")}
    for _ in range(args.rounds):
        for (label, kind), values in samples.items():
            values.append(phase(clients[label], kind))
    med = {f"{label} / {kind}": round(statistics.median(v)) for (label, kind), v in samples.items()}
    ratios = {kind: round(statistics.median(samples[("two-arm experiment", kind)])
                          / statistics.median(samples[("no experiment", kind)]), 3)
              for kind in ("cached", "uncached")}  # fmt: skip
    print(json.dumps({"label": args.label, "rounds": args.rounds, "requests_per_phase": args.requests,
                      "cpu_us_per_request_median": med, "experiment_over_none": ratios,
                      "warmup_answers_per_arm": arms}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
