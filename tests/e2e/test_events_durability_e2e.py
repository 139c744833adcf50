"""kill -9 of a gunicorn worker while events and recommendations stream in: every event
and served request acknowledged before the killed worker's last flush interval is on disk
exactly once (after the clean stop; the replacement worker recovers the orphan spool),
and what is lost is only what it acknowledged within that interval (docs/feedback.md)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from shared.events import event_log_dir
from shared.parquet_log import SPOOL_DIR, part_files, recover_orphans
from shared.request_log import log_dir
from tests.e2e.test_process_drills_e2e import _children, _master, _workers_ready
from tests.e2e.test_service_e2e import running_server
from tests.online.bundle_factory import build_bundle

pytestmark = pytest.mark.e2e

FLUSH_SECONDS = 0.2  # the default log_flush_seconds, the documented bound
# Scheduling slack on a shared 2-core machine: the writer thread may run late by this much.
SLACK_SECONDS = 0.5


class Load:
    """Client threads posting event batches and recommendations; what was acknowledged,
    with the monotonic time of each acknowledgement."""

    def __init__(self, base: str, threads: int = 4) -> None:
        self.base = base
        self.events: dict[str, float] = {}
        self.requests: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, n: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            session = requests.Session()  # new connections spread over both workers
            try:
                if n % 2:
                    ids = [f"t{n}-{seq}-{k}" for k in range(50)]
                    events = [{"event_id": i, "type": "click", "user_id": "u1",
                               "item_id": f"m{k}"} for k, i in enumerate(ids)]  # fmt: skip
                    resp = session.post(f"{self.base}/v1/events", json={"events": events},
                                        headers={"Connection": "close"}, timeout=5)  # fmt: skip
                    if resp.status_code == 202 and resp.json()["accepted"] == len(ids):
                        now = time.monotonic()
                        with self._lock:
                            self.events.update(dict.fromkeys(ids, now))
                else:
                    rid = f"r{n}-{seq}"
                    resp = session.post(f"{self.base}/v1/recommendations",
                                        json={"user_id": "u1", "k": 5}, timeout=5,
                                        headers={"X-Request-Id": rid, "Connection": "close"})  # fmt: skip
                    if resp.status_code == 200:
                        with self._lock:
                            self.requests[rid] = time.monotonic()
            except requests.RequestException:
                pass  # in flight on the killed worker: never acknowledged
            finally:
                session.close()


def _on_disk(root: Path, column: str) -> list[str]:
    return [v for f in part_files(root)
            for v in pq.read_table(f, columns=[column]).column(0).to_pylist()]  # fmt: skip


def _check(name: str, acked: dict[str, float], on_disk: list[str], killed_at: float) -> str:
    assert len(on_disk) == len(set(on_disk)), f"{name}: a record was written twice"
    lost = {i: t for i, t in acked.items() if i not in set(on_disk)}
    early = {i: round(killed_at - t, 3) for i, t in lost.items()
             if t < killed_at - FLUSH_SECONDS - SLACK_SECONDS}  # fmt: skip
    assert not early, f"{name}: lost records acknowledged before the last flush: {early}"
    oldest = max((killed_at - t for t in lost.values()), default=0.0)
    return f"{len(lost)} {name} (acknowledged at most {oldest:.2f} s before the kill)"


def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    build_bundle(artifacts, "run-a", n_users=200, n_items=2000, dim=32, with_ranker=True)
    # Rotation only at stop: what the killed worker held is in its spool, not in Parquet.
    with running_server(artifacts, tmp_path / "server.log",
                        RECSYS_REQUEST_LOG_ROTATE_SECONDS="600") as base:  # fmt: skip
        master = _master(int(base.rsplit(":", 1)[1]))
        victim, sibling = sorted(_workers_ready(base, master))
        with Load(base) as load:
            time.sleep(1.5)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while len(_children(master) - {sibling, victim}) < 1:
                assert time.monotonic() < deadline, "no replacement worker"
                time.sleep(0.05)
            time.sleep(1.0)
        # The replacement recovers the victim's spools when its writers start.
        deadline = time.monotonic() + 30
        for root in (event_log_dir(artifacts), log_dir(artifacts)):
            while not any(f.name.startswith(f"part-{victim}-") for f in part_files(root)):
                assert time.monotonic() < deadline, f"{root}: the orphan was not recovered"
                time.sleep(0.1)
            assert not list((root / SPOOL_DIR).glob(f"{victim}-*"))
    # Clean stop: every live worker rotated its spool; nothing is left to recover.
    assert recover_orphans(event_log_dir(artifacts)) == 0
    assert recover_orphans(log_dir(artifacts)) == 0
    assert len(load.events) >= 1000 and len(load.requests) >= 50, (
        len(load.events), len(load.requests))  # fmt: skip
    lost_events = _check("events", load.events, _on_disk(event_log_dir(artifacts), "event_id"),
                         killed_at)  # fmt: skip
    lost_served = _check("served", load.requests, _on_disk(log_dir(artifacts), "request_id"),
                         killed_at)  # fmt: skip
    print(f"\nkill -9: {len(load.events)} events and {len(load.requests)} requests "
          f"acknowledged; lost {lost_events}, {lost_served}")  # fmt: skip
