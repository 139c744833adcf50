"""CPU per request of each arm of a two-arm experiment, against the same users on a server
with no experiment: which part of an experiment's cost is the code path (the control arm,
which serves CURRENT) and which is serving a second bundle (the canary arm).

Run `bench/request_cpu.py --experiment --scratch DIR` first: it builds DIR/plain and
DIR/experiment (the same bundle hard-linked, and a 50/50 experiment whose canary arm serves
a clone of it).

    PYTHONPATH=. .venv/bin/python bench/experiment_arm_cpu.py --scratch /tmp/recsys-request-cpu2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from online.app import create_app
from shared import experiments as exp
from shared.bundle import current_bundle
from shared.bundle_layout import RECOMMENDATIONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/recsys-request-cpu"))
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    roots = {"no experiment": args.scratch / "plain", "two-arm experiment": args.scratch / "experiment"}
    table = pq.read_table(current_bundle(roots["no experiment"]) / RECOMMENDATIONS, columns=["user_id"])
    users = [str(u) for u in table.column("user_id").unique().to_pylist()]
    file = exp.load(roots["two-arm experiment"])
    arm_of = {u: exp.assign(file, u)[0].arm for u in users}
    groups = {arm: [u for u in users if arm_of[u] == arm] for arm in sorted(set(arm_of.values()))}
    clients = {}
    for label, root in roots.items():
        client = create_app({"artifacts": root, "reload_poll_seconds": 0, "request_log": True}).test_client()
        client.get("/readyz")
        for u in users:  # warm every path and the scored caches
            client.post("/v1/recommendations", json={"user_id": u, "k": 20})
        clients[label] = client

    def phase(client: object, bodies: list[str]) -> float:
        start = time.process_time()
        for i in range(args.requests):
            client.post("/v1/recommendations", data=bodies[i % len(bodies)],  # type: ignore[attr-defined]
                        content_type="application/json")  # fmt: skip
        return (time.process_time() - start) / args.requests * 1e6

    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, client in clients.items():
            for arm, members in groups.items():
                bodies = [json.dumps({"user_id": u, "k": 20}) for u in members]
                samples.setdefault((label, arm), []).append(phase(client, bodies))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(json.dumps({
        "cpu_us_per_request_median": {f"{label} / users of {arm}": round(v) for (label, arm), v in med.items()},
        "experiment_over_none_by_arm": {arm: round(med[("two-arm experiment", arm)] / med[("no experiment", arm)], 3)
                                        for arm in groups},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
