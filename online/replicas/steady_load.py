"""A steady closed-loop load through the LB that counts every request: sent, ok, failed.

What the rolling restart and the kill are measured with (tests/e2e/test_replicas_e2e.py,
bench/replicas_load.py). Each thread keeps one keep-alive connection, sends its requests in
turn with a pause between them (a steady rate, not saturation) and records each one's
method, start and end times, status (None: a socket error) and the replica that answered.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class Outcome:
    method: str
    started: float  # time.monotonic()
    ended: float
    status: int | None
    replica: str | None  # X-Recsys-Replica

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def by_replica(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for o in self.outcomes:
            counts[o.replica] = counts.get(o.replica, 0) + 1
        return counts

    def summary(self) -> dict[str, int]:
        return {"sent": self.sent, "ok": self.ok, "failed": len(self.failed)}


class SteadyLoad:
    def __init__(self, base_url: str, calls: Sequence[Call], threads: int = 4,
                 pause_s: float = 0.01, timeout_s: float = 10.0) -> None:  # fmt: skip
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.calls = list(calls)
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.tally = Tally()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]  # fmt: skip

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _run(self, offset: int) -> None:
        conn = self._connect()
        i = offset
        while not self._stop.is_set():
            call = self.calls[i % len(self.calls)]
            i += 1
            started = time.monotonic()
            status: int | None = None
            replica = None
            try:
                conn.request(call.method, call.path, body=call.body, headers=JSON)
                resp = conn.getresponse()
                resp.read()
                status, replica = resp.status, resp.getheader("X-Recsys-Replica")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._connect()
            outcome = Outcome(call.method, started, time.monotonic(), status, replica)
            with self._lock:
                self.tally.outcomes.append(outcome)
            self._stop.wait(self.pause_s)
        conn.close()

    def start(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.tally

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
