"""Process drills on the real server (`recsys serve`, gunicorn, 2 workers, loopback): a
worker killed with SIGKILL under load, a worker stopped with SIGSTOP (replaced by
gunicorn's worker timeout, or resumed with SIGCONT before it), and the served-request log
directory made unusable while traffic flows. A synthetic bundle serves
(tests/online/bundle_factory.py), so no Spark is needed. What each drill asserts and what
it costs: docs/service.md, *Drills*."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import requests

from shared.request_log import log_dir, part_files
from tests.e2e.test_service_e2e import running_server
from tests.online.bundle_factory import build_bundle

pytestmark = pytest.mark.e2e

WORKERS = 2  # running_server's
CLIENTS = 4
WORKER_TIMEOUT = 5  # RECSYS_WORKER_TIMEOUT of stop_server, seconds
USER = "u1"  # a known user of the synthetic bundle: the full re-rank path answers


# --- the processes --------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ')'


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ppid(int(entry.name)) == pid:
            found.add(int(entry.name))
    return found


def _master(port: int) -> int:
    """The gunicorn master listening on `port`: the child of this test process (`recsys
    serve` execs gunicorn) holding the listening socket. (Its environment cannot tell:
    setproctitle writes the process title over it.)"""
    for pid in _children(os.getpid()):
        if _sockets(pid, port, LISTEN):
            return pid
    raise AssertionError(f"no child process listens on port {port}")


def _ready_pids(base: str) -> set[int]:
    """Workers that have loaded a bundle: one `recsys_bundle_info` series per live worker,
    labelled with its pid (series of dead workers are removed by child_exit)."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {int(p) for p in re.findall(r'^recsys_bundle_info\{[^}]*pid="(\d+)"', text, re.M)}


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll until check() holds; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic()


def _workers_ready(base: str, master: int) -> set[int]:
    """Wait until the master has WORKERS children, each serving a bundle; their pids."""
    pids: set[int] = set()

    def ready() -> bool:
        nonlocal pids
        pids = _children(master)
        return len(pids) == WORKERS and pids <= _ready_pids(base)

    _wait_for("every worker ready", ready, 60)
    return pids


LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def _sockets(pid: int, port: int, state: str) -> int:
    """How many sockets on local `port` in `state` process `pid` holds (its socket fds
    matched against /proc/net/tcp by inode)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port and cols[3] == state:
            inodes.add(f"socket:[{cols[9]}]")
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd) in inodes
        except OSError:  # closed meanwhile
            continue
    return held


# --- the traffic ----------------------------------------------------------------------


@dataclass
class Outcome:
    client: int
    request_id: str
    started: float  # monotonic
    seconds: float
    status: int | None  # None: no answer
    error: str | None = None  # the exception's class name when there was no answer


@dataclass
class Traffic:
    """CLIENTS threads posting /v1/recommendations until stop(), each on its own kept-alive
    session (or, `fresh`, on a new connection per request, so that requests spread over
    the workers as they accept); every outcome recorded."""

    base: str
    timeout: float
    tag: str
    fresh: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(CLIENTS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self, n: int) -> None:
        session, seq = requests.Session(), 0
        while not self._stop.is_set():
            seq += 1
            request_id = f"{self.tag}-{n}-{seq}"
            started = time.monotonic()
            status, error = None, None
            try:
                resp = session.post(
                    f"{self.base}/v1/recommendations",
                    json={"user_id": USER, "k": 10},
                    headers={"X-Request-Id": request_id}
                    | ({"Connection": "close"} if self.fresh else {}),
                    timeout=self.timeout,
                )
                status = resp.status_code
            except requests.RequestException as exc:
                error = type(exc).__name__
            with self._lock:
                self.outcomes.append(
                    Outcome(n, request_id, started, time.monotonic() - started, status, error)
                )
            time.sleep(0.005)

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.started < end]


def _summary(outcomes: list[Outcome]) -> str:
    ok = sum(o.status == 200 for o in outcomes)
    bad = [(o.client, o.status, o.error, round(o.seconds, 2)) for o in outcomes if o.status != 200]
    return f"{ok} of {len(outcomes)} answered 200; others: {bad[:10]}"


def _fresh_round(base: str, seconds: float = 2.0) -> Traffic:
    """`seconds` of requests on new connections; the traffic, stopped."""
    with Traffic(base, timeout=5.0, tag=f"fresh-{time.monotonic_ns()}", fresh=True) as traffic:
        time.sleep(seconds)
    return traffic


def _logged_request_ids(artifacts: Path, pid: int | None = None) -> set[str]:
    """Request ids in the served-request log (only the files of worker `pid` if given)."""
    found = set()
    for path in part_files(log_dir(artifacts)):
        if pid is None or path.name.startswith(f"part-{pid}-"):
            found.update(pq.read_table(path, columns=["request_id"]).column(0).to_pylist())
    return found


# --- the servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def drill_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("drills") / "artifacts"
    build_bundle(artifacts, "run-a", n_users=200, n_items=2000, dim=32, with_ranker=True)
    return artifacts


@dataclass(frozen=True)
class Server:
    base: str
    port: int
    master: int
    log: Path


    def log_text(self, since: int = 0) -> str:
        """The server's log from byte `since` (a log_size() taken earlier)."""
        with self.log.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size


@contextlib.contextmanager
def _drill_server(artifacts: Path, tmp: Path, **env: str) -> Iterator[Server]:
    log = tmp / "server.log"
    with running_server(artifacts, log, **env) as base:
        port = int(urlsplit(base).port or 80)
        yield Server(base, port, _master(port), log)


@pytest.fixture(scope="module")
def server(drill_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every setting at its default (the worker timeout included: 60 s)."""
    with _drill_server(drill_artifacts, tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def stop_server(
    drill_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A short worker timeout, so the SIGSTOP drills see gunicorn replace a worker. (On a
    machine starved of CPU a short timeout can also replace a worker that is only slow;
    the other drills keep the default.)"""
    tmp = tmp_path_factory.mktemp("stop-server")
    artifacts = tmp / "artifacts"  # its own: the served-log drill moves server's log away
    shutil.copytree(drill_artifacts, artifacts, ignore=shutil.ignore_patterns("served_log"))
    with _drill_server(artifacts, tmp, RECSYS_WORKER_TIMEOUT=str(WORKER_TIMEOUT)) as srv:
        yield srv


# --- SIGKILL --------------------------------------------------------------------------


def test_kill_9_of_a_worker_under_load(server: Server, drill_artifacts: Path) -> None:
    """Only the requests in flight on the killed worker fail, as a closed connection (never
    a 5xx); the master starts a replacement; once it is ready every request answers 200,
    and it serves (its own served-log files hold post-recovery requests)."""
    victim, sibling = sorted(_workers_ready(server.base, server.master))
    with Traffic(server.base, timeout=5.0, tag="kill") as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replacements: set[int] = set()

        def replaced() -> bool:
            nonlocal replacements
            replacements = _children(server.master) - {victim, sibling}
            return bool(replacements) and replacements <= _ready_pids(server.base)

        ready_at = _wait_for("a ready replacement", replaced, 60)
        time.sleep(1.0)
        traffic.stop()
    # The clients' sessions all sit on the sibling now: new connections reach both.
    fresh = _fresh_round(server.base)
    (replacement,) = replacements
    assert _children(server.master) == {sibling, replacement}
    assert victim not in _ready_pids(server.base)  # its metrics series went with it

    before = traffic.between(0, killed_at)
    around = traffic.between(killed_at, ready_at)
    after = traffic.between(ready_at)
    report = f"before {_summary(before)}\naround {_summary(around)}\nafter {_summary(after)}"
    answered = [o for o in traffic.outcomes if o.status is not None]
    failed = [o for o in traffic.outcomes if o.status is None]
    assert all(o.status == 200 for o in answered), report  # no 5xx, no 4xx
    # At most one request per client was on the killed worker when it died.
    assert len(failed) <= CLIENTS, report
    # The connection reset or closed before or during the answer; never a hang (Timeout).
    assert {o.error for o in failed} <= {"ConnectionError", "ChunkedEncodingError"}, report
    # Sent before the kill (or as it landed: a starved process takes a moment to die).
    assert all(o.started < killed_at + 0.5 for o in failed), report
    assert len(before) >= 20 and len(after) >= 20, report
    assert all(o.status == 200 for o in after), report
    assert {o.client for o in after} == set(range(CLIENTS)), report  # every client recovered
    assert len(fresh.outcomes) >= 20, _summary(fresh.outcomes)
    assert all(o.status == 200 for o in fresh.outcomes), _summary(fresh.outcomes)
    # The replacement answered some of them: they are in its own served-log files (named
    # by pid; the server rotates them every 2 s).
    fresh_ids = {o.request_id for o in fresh.outcomes}
    _wait_for(
        "the replacement's served-log files",
        lambda: bool(_logged_request_ids(drill_artifacts, replacement) & fresh_ids),
        15,
    )
    print(f"\nkill -9 drill: {len(failed)} failed of {len(traffic.outcomes)}; "
          f"replacement ready {ready_at - killed_at:.2f} s after the kill\n{report}")  # fmt: skip


# --- SIGSTOP --------------------------------------------------------------------------


def _busiest(server: Server, workers: set[int]) -> int:
    """The worker holding most of the clients' kept-alive connections (so the drill always
    stops one that has some)."""
    return max(sorted(workers), key=lambda pid: _sockets(pid, server.port, ESTABLISHED))


def test_sigstop_of_a_worker_until_the_worker_timeout_replaces_it(stop_server: Server) -> None:
    """The sibling keeps answering; requests on the stopped worker's connections end at
    the client's timeout (at most one per client); gunicorn's worker timeout kills and
    replaces the stopped worker; then every request answers 200."""
    client_timeout = 1.5
    workers = _workers_ready(stop_server.base, stop_server.master)
    log_from = stop_server.log_size()
    with Traffic(stop_server.base, timeout=client_timeout, tag="stop") as traffic:
        time.sleep(1.0)
        victim = _busiest(stop_server, workers)
        held = _sockets(victim, stop_server.port, ESTABLISHED)
        stopped_at = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            gone_at = _wait_for(
                "the master to kill the stopped worker",
                lambda: victim not in _children(stop_server.master),
                WORKER_TIMEOUT + 20,
            )
        finally:
            if _ppid(victim) == stop_server.master:  # never leave a stopped process behind
                os.kill(victim, signal.SIGKILL)
        replacements: set[int] = set()

        def replaced() -> bool:
            nonlocal replacements
            replacements = _children(stop_server.master) - workers
            return bool(replacements) and replacements <= _ready_pids(stop_server.base)

        ready_at = _wait_for("a ready replacement", replaced, 60)
        time.sleep(1.0)
        traffic.stop()
    fresh = _fresh_round(stop_server.base)

    during = traffic.between(stopped_at, gone_at)
    after = traffic.between(ready_at)
    report = f"during {_summary(during)}\nafter {_summary(after)}"
    answered = [o for o in traffic.outcomes if o.status is not None]
    failed = [o for o in traffic.outcomes if o.status is None]
    assert all(o.status == 200 for o in answered), report
    # Each client whose kept-alive connection sat on the stopped worker waited out its
    # timeout once, then reconnected to the sibling (a stopped process accepts nothing).
    assert 1 <= len(failed) <= min(held, CLIENTS), f"held {held}; {report}"
    assert {o.error for o in failed} <= {"ReadTimeout", "ConnectionError"}, report
    assert all(client_timeout - 0.1 < o.seconds < client_timeout + 1.0 for o in failed), report
    assert max(o.seconds for o in answered) < client_timeout + 1.0, report
    assert sum(o.status == 200 for o in during) >= 20, report  # the sibling answered
    # gunicorn's heartbeat clock: the last check-in is at most ~1 s before the stop, and the
    # master looks once a second (SIGABRT, which a stopped process cannot act on, then
    # SIGKILL a second later).
    assert WORKER_TIMEOUT - 1.5 < gone_at - stopped_at < WORKER_TIMEOUT + 4.0, report
    assert f"WORKER TIMEOUT (pid:{victim})" in stop_server.log_text(log_from)
    assert len(after) >= 20 and all(o.status == 200 for o in after), report
    assert {o.client for o in after} == set(range(CLIENTS)), report
    assert len(fresh.outcomes) >= 20, _summary(fresh.outcomes)
    assert all(o.status == 200 for o in fresh.outcomes), _summary(fresh.outcomes)
    print(f"\nSIGSTOP drill: {len(failed)} timed out of {len(traffic.outcomes)} (stopped "
          f"worker held {held}); killed {gone_at - stopped_at:.2f} s after the stop, "
          f"replacement ready {ready_at - gone_at:.2f} s later\n{report}")  # fmt: skip


def test_sigstop_then_sigcont_within_the_worker_timeout(stop_server: Server) -> None:
    """A worker stopped for less than the worker timeout and resumed: its requests wait and
    are then answered (none fails with a client timeout longer than the stop), and the
    master keeps it (no replacement)."""
    pause = 1.0
    workers = _workers_ready(stop_server.base, stop_server.master)
    log_from = stop_server.log_size()
    with Traffic(stop_server.base, timeout=pause + 4.0, tag="cont") as traffic:
        time.sleep(1.0)
        victim = _busiest(stop_server, workers)
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(victim, signal.SIGCONT)
        # Past the timeout counted from the stop: the master would have acted by now.
        time.sleep(WORKER_TIMEOUT + 1.0 - pause)
        traffic.stop()
    report = _summary(traffic.outcomes)
    assert all(o.status == 200 for o in traffic.outcomes), report
    assert _children(stop_server.master) == workers, "the resumed worker was replaced"
    assert "WORKER TIMEOUT" not in stop_server.log_text(log_from)
    waited = max(o.seconds for o in traffic.outcomes)
    assert pause - 0.2 < waited < pause + 1.5, report  # the stopped worker's requests waited
    print(f"\nSIGCONT drill: {len(traffic.outcomes)} answered 200, longest {waited:.2f} s")


# --- an unusable served-log directory -------------------------------------------------

WRITE_FAILED = "request log: could not write"  # shared/request_log.py's log line


@dataclass
class LogOutage:
    """What the served-log drill saw: request ids sent before, during and after the outage
    (every answer's status), the server's log lines about it, and the request ids on disk
    while the server still ran (`logged_running`) and after it stopped (`logged_final`)."""

    statuses: dict[str, int | None]
    before: set[str]
    during: set[str]
    after: set[str]
    failure_lines: list[str]
    logged_running: set[str]
    logged_final: set[str]
    metrics: dict[str, float]  # the request-log counters in /metrics after the outage


def _post_ids(base: str, tag: str, count: int) -> dict[str, int | None]:
    """`count` recommendations on new connections (both workers answer), with request ids
    `tag-<n>`; their statuses (None: no answer)."""
    statuses: dict[str, int | None] = {}
    for n in range(count):
        request_id = f"{tag}-{n}"
        try:
            statuses[request_id] = requests.post(
                f"{base}/v1/recommendations",
                json={"user_id": USER, "k": 5},
                headers={"X-Request-Id": request_id, "Connection": "close"},
                timeout=5,
            ).status_code
        except requests.RequestException:
            statuses[request_id] = None
    return statuses


@pytest.fixture(scope="module")
def log_outage(drill_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> LogOutage:
    """ART/served_log replaced by a regular file (as root, a chmod would not stop the
    writes) while requests keep coming for several rotations (1 s each), then put back."""
    tmp = tmp_path_factory.mktemp("outage")
    artifacts = tmp / "artifacts"
    shutil.copytree(drill_artifacts, artifacts, ignore=shutil.ignore_patterns("served_log"))
    served_log, away = log_dir(artifacts), tmp / "served_log.away"
    statuses: dict[str, int | None] = {}
    with _drill_server(artifacts, tmp, RECSYS_REQUEST_LOG_ROTATE_SECONDS="1") as srv:
        statuses |= _post_ids(srv.base, "before", 40)
        before = set(statuses)
        _wait_for("the first records on disk",
                  lambda: before <= _logged_request_ids(artifacts), 15)  # fmt: skip
        log_from = srv.log_size()
        served_log.rename(away)
        served_log.write_text("not a directory\n")
        during: set[str] = set()
        try:
            deadline = time.monotonic() + 4.0  # at least three rotations of each worker
            while time.monotonic() < deadline or WRITE_FAILED not in srv.log_text(log_from):
                assert time.monotonic() < deadline + 15, "no write failure was reported"
                batch = _post_ids(srv.base, f"during-{len(during)}", 10)
                statuses |= batch
                during |= set(batch)
        finally:
            served_log.unlink()
            away.rename(served_log)
        failure_lines = [line for line in srv.log_text(log_from).splitlines()
                         if WRITE_FAILED in line]  # fmt: skip
        counters = _request_log_counters(srv.base)
        after_statuses = _post_ids(srv.base, "after", 40)
        statuses |= after_statuses
        after = set(after_statuses)
        deadline = time.monotonic() + 15
        while not after <= (logged_running := _logged_request_ids(artifacts)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    # The server has stopped: each worker wrote what it still held at exit.
    return LogOutage(statuses, before, during, after, failure_lines, logged_running,
                     _logged_request_ids(artifacts), counters)  # fmt: skip


def _request_log_counters(base: str) -> dict[str, float]:
    """recsys_log_{dropped,write_errors}_total{log="served"}, summed over the workers."""
    out = {"dropped": 0.0, "write_errors": 0.0}
    for line in requests.get(f"{base}/metrics", timeout=5).text.splitlines():
        for name in out:
            if line.startswith(f'recsys_log_{name}_total{{log="served"}}'):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def test_unusable_served_log_directory_keeps_serving_and_recovers(log_outage: LogOutage) -> None:
    """Every request is answered 200 through the outage; the failure is logged and counted
    in /metrics; once the directory is back, later records reach disk again."""
    bad = {rid: s for rid, s in log_outage.statuses.items() if s != 200}
    assert not bad, bad
    assert len(log_outage.during) >= 20
    assert log_outage.failure_lines, "the write failure was not reported"
    assert all('"level": "ERROR"' in line for line in log_outage.failure_lines)
    assert log_outage.metrics["write_errors"] >= 1
    assert log_outage.before <= log_outage.logged_running
    missing = log_outage.after - log_outage.logged_running
    assert not missing, f"{len(missing)} of {len(log_outage.after)} later records not on disk"


def test_records_served_during_the_outage_reach_disk_once_it_ends(
    log_outage: LogOutage,
) -> None:
    """Failed writes are retried: nothing served during the outage is lost or dropped."""
    assert log_outage.metrics["dropped"] == 0
    lost = log_outage.during - log_outage.logged_final
    assert not lost, f"{len(lost)} of {len(log_outage.during)} records served during the outage lost"
