"""Micro-bench of the real-time store's per-request read, `state(user_id, now)`.

Fills a store with USERS users holding `max_recent` (50) recent items and a few
exclusions, then times single `state()` calls for random users (µs, p50/p99), for SQLite
(a temp file, WAL) and Redis (a redis-server started here on a free port, if installed).

    PYTHONPATH=$PWD .venv/bin/python bench/realtime_state.py [--users 10000] [--calls 20000]
Writes bench/results/realtime/<date>.json (merging into the day's file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from online.realtime import RealtimeStore
from online.realtime.sqlite_store import SqliteStore
from shared.events import FeedbackEvent

OUT = Path(__file__).parent / "results" / "realtime"


def fill(store: RealtimeStore, users: int, per_user: int) -> None:
    now = time.time()
    batch: list[FeedbackEvent] = []
    for u in range(users):
        for n in range(per_user + 5):
            ts = dt.datetime.fromtimestamp(now - 3600 + n, dt.UTC)
            kind = "dislike" if n >= per_user else "play"
            batch.append(FeedbackEvent(f"{u}-{n}", kind, f"u{u}", f"m{(u * 7 + n) % 5000}", ts, ts))
        if len(batch) >= 5000:
            store.record(batch)
            batch = []
    store.record(batch)


def time_state(store: RealtimeStore, users: int, calls: int) -> dict[str, Any]:
    rng = random.Random(0)
    ids = [f"u{rng.randrange(users)}" for _ in range(calls)]
    for user in ids[:500]:  # warm the connection and the page cache
        store.state(user, time.time())
    took = np.empty(calls)
    for n, user in enumerate(ids):
        t0 = time.perf_counter()
        state = store.state(user, time.time())
        took[n] = time.perf_counter() - t0
    assert len(state.recent_item_ids) == 50 and len(state.excluded_item_ids) == 5
    us = took * 1e6
    return {"calls": calls, "p50_us": round(float(np.percentile(us, 50)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1)}  # fmt: skip


def with_redis(users: int, calls: int) -> dict[str, Any] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    from online.realtime.redis_store import RedisStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no",
                                 "--dir", tmp], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            store = RedisStore(f"redis://127.0.0.1:{port}/0")
            fill(store, users, 50)
            return time_state(store, users, calls)
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    result: dict[str, Any] = {"users": args.users, "recent_per_user": 50, "excluded_per_user": 5}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "realtime.sqlite3")
        fill(store, args.users, 50)
        result["sqlite"] = time_state(store, args.users, args.calls)
        store.close()
    result["redis"] = with_redis(args.users, args.calls)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{dt.date.today().isoformat()}.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged["state_microbench"] = result
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
