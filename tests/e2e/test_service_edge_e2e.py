"""The service edge on the real server (`recsys serve`, gunicorn, 2 workers), raw sockets:
slow clients, what gunicorn refuses before the app, bodies in either framing, reloads as
the metrics see them, admin token guesses. The edge does not depend on the bundle, so a
synthetic one serves (tests/online/bundle_factory.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from shared.bundle import write_current
from tests.e2e.conftest import publish_clone
from tests.e2e.test_service_e2e import TOKEN, running_server
from tests.online.bundle_factory import build_bundle

pytestmark = pytest.mark.e2e

WORKERS = 2  # running_server's
LIMIT = 256 * 1024  # the default max_content_length
QUICK_DEADLINE = 1.5  # RECSYS_READ_TIMEOUT of the quick server
RECOMMEND = b"POST /v1/recommendations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def edge_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("edge") / "artifacts"
    build_bundle(artifacts, "run-a", n_users=200, n_items=2000, dim=32)
    return artifacts


@pytest.fixture(scope="module")
def server(edge_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every edge setting at its default."""
    with running_server(edge_artifacts, tmp_path_factory.mktemp("log") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def quick_server(edge_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A short read deadline, so tests can watch it fire."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    with running_server(edge_artifacts, log, RECSYS_READ_TIMEOUT=str(QUICK_DEADLINE)) as base:
        yield base


def _port(base: str) -> int:
    return int(urlsplit(base).port or 80)


def _connect(base: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _port(base)), timeout=timeout)


def _read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return out
        out += part


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _exchange(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request that ends the connection; the whole answer."""
    with _connect(base) as sock:
        sock.sendall(data)
        return _parse(_read_until_closed(sock))


def _slow_body(base: str) -> socket.socket:
    """Announces 100 bytes of body, sends 11, then nothing."""
    sock = _connect(base)
    sock.sendall(RECOMMEND + b'Content-Length: 100\r\n\r\n{"user_id":')
    return sock


def _slow_headers(base: str) -> socket.socket:
    """A request line and half a header, then nothing."""
    sock = _connect(base)
    sock.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: t\r\nX-Wait: ")
    return sock


def _normal_traffic(base: str, seconds: float, threads: int = 4) -> list[tuple[int, float]]:
    """(status, seconds) of each request: recommendations and pings, kept-alive and fresh
    connections, from `threads` clients for `seconds`; a failure is status 0."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                if n % 2:
                    resp = session.post(f"{base}/v1/recommendations",
                                        json={"user_id": "u1", "k": 5}, timeout=5)  # fmt: skip
                else:
                    resp = requests.get(f"{base}/v1/ping", timeout=5)  # a new connection
                status = resp.status_code
            except requests.RequestException:
                status = 0
            with lock:
                results.append((status, time.monotonic() - started))
            time.sleep(0.02)

    pool = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def _assert_all_answered(results: list[tuple[int, float]], bound: float = 1.0) -> None:
    assert len(results) >= 40, len(results)
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} failed: {failed[:5]}"
    slowest = max(seconds for _, seconds in results)
    assert slowest < bound, f"slowest normal request took {slowest:.2f} s"


def test_slow_clients_do_not_stop_the_service(server: str) -> None:
    """4 x workers connections stuck in their body, 2 x workers in their headers: every
    normal request is still answered, each within a second, with the defaults."""
    slow = [_slow_body(server) for _ in range(4 * WORKERS)]
    slow += [_slow_headers(server) for _ in range(2 * WORKERS)]
    try:
        time.sleep(0.3)  # accepted and being read
        _assert_all_answered(_normal_traffic(server, seconds=3.0))
        for sock in slow:  # still held (the deadline is 10 s), just not on the app's threads
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in slow:
            sock.close()


def test_a_request_slower_than_the_read_deadline_gets_408(quick_server: str) -> None:
    stop = threading.Event()
    trickled = _connect(quick_server)

    def trickle() -> None:  # a byte every 0.2 s: never idle long enough for a recv timeout
        for byte in b"GET /v1/ping HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200:
            if stop.is_set():
                return
            try:
                trickled.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    started = time.monotonic()
    stuck = _slow_body(quick_server)
    thread.start()
    try:
        for sock in (stuck, trickled):
            status, headers, body = _parse(_read_until_closed(sock))  # the server closes it
            took = time.monotonic() - started
            assert status == 408, body
            assert headers["content-type"] == "application/json"
            assert headers["connection"] == "close"
            assert json.loads(body) == {
                "error": f"request not received within {QUICK_DEADLINE:g} s",
                "field": None,
            }
            assert QUICK_DEADLINE - 0.2 < took < QUICK_DEADLINE + 1.5, took
    finally:
        stop.set()
        thread.join()
        stuck.close()
        trickled.close()
    metrics = requests.get(f"{quick_server}/metrics", timeout=5).text
    assert 'recsys_errors_total{kind="http_408"}' in metrics


def test_slow_clients_coming_back_leave_normal_traffic_answered(quick_server: str) -> None:
    """An attacker that reopens each slow connection the deadline closes, for longer than
    the deadline: normal traffic is answered throughout, 408s and closes included."""
    stop = threading.Event()
    answered_408 = [0]

    def attacker() -> None:
        socks = [_slow_body(quick_server) for _ in range(2 * WORKERS)]
        try:
            while not stop.is_set():
                for i, sock in enumerate(socks):
                    sock.setblocking(False)
                    try:
                        if sock.recv(4096).startswith(b"HTTP/1.1 408"):
                            answered_408[0] += 1
                        sock.close()
                        socks[i] = _slow_body(quick_server)
                    except BlockingIOError:
                        pass
                time.sleep(0.05)
        finally:
            for sock in socks:
                sock.close()

    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        results = _normal_traffic(quick_server, seconds=2 * QUICK_DEADLINE + 1.0)
    finally:
        stop.set()
        thread.join()
    _assert_all_answered(results)
    assert answered_408[0] >= 2 * WORKERS  # the deadline fired during the traffic


def _chunked(body: bytes, size: int = 65536) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


GUNICORN_REFUSALS = {
    "request line over 4 KB": (
        b"GET /v1/ping?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, None),
    "one header over 8 KB": (
        b"GET /v1/ping HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, None),
    "too many headers": (
        b"GET /v1/ping HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431, None),
    "malformed request line": (b"GARBAGE\r\n\r\n", 400, None),
    "negative Content-Length": (RECOMMEND + b"Content-Length: -1\r\n\r\n", 400, "Content-Length"),
    "Content-Length and Transfer-Encoding": (
        RECOMMEND + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
        "Content-Length"),
    "malformed chunk size": (
        RECOMMEND + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, None),
    "unknown Transfer-Encoding": (
        RECOMMEND + b"Transfer-Encoding: rot13\r\n\r\n", 501, "Transfer-Encoding"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GUNICORN_REFUSALS))
def test_errors_from_gunicorn_itself_are_json(server: str, case: str) -> None:
    request, expected, field = GUNICORN_REFUSALS[case]
    status, headers, body = _exchange(server, request)
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    answer = json.loads(body)
    assert set(answer) == {"error", "field"} and answer["error"]
    assert answer["field"] == field
    assert requests.get(f"{server}/v1/ping", timeout=5).status_code == 200


def _padded(size: int) -> bytes:
    body = json.dumps({"user_id": "u1", "k": 3}).encode()
    return body + b" " * (size - len(body))


def test_an_oversized_chunked_body_gets_413_like_a_content_length_one(server: str) -> None:
    close = b"Connection: close\r\n"
    too_big = _padded(LIMIT + 1)
    for request in (
        RECOMMEND + close + b"Content-Length: %d\r\n\r\n" % len(too_big) + too_big,
        RECOMMEND + close + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(too_big),
    ):
        status, headers, body = _exchange(server, request)
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "request body too large", "field": None}
    at_limit = _padded(LIMIT)  # the limit itself passes, in either framing
    status, _, _ = _exchange(
        server, RECOMMEND + close + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(at_limit)
    )
    assert status == 200
    status, _, _ = _exchange(
        server, RECOMMEND + close + b"Content-Length: %d\r\n\r\n" % len(at_limit) + at_limit
    )
    assert status == 200


def test_an_oversized_body_closes_the_connection(server: str) -> None:
    """The body past the limit is never read, so nothing after it is taken as a request."""
    too_big = _padded(LIMIT + 1)
    smuggled = b"GET /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n"
    with _connect(server) as sock:
        sock.sendall(RECOMMEND + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(too_big)
                     + smuggled)  # fmt: skip
        raw = _read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 ") == 1 and raw.startswith(b"HTTP/1.1 413")


def test_pipelined_requests_with_bodies_are_answered_in_order(server: str) -> None:
    """Bodies are read ahead of the application: what follows a body is the next request."""
    def post(user: str) -> bytes:
        body = json.dumps({"user_id": user, "k": 2}).encode()
        return RECOMMEND + b"Content-Length: %d\r\n\r\n" % len(body) + body

    chunked = _chunked(json.dumps({"user_id": "u3", "k": 2}).encode(), size=7)
    with _connect(server) as sock:
        sock.sendall(post("u1") + RECOMMEND + b"Transfer-Encoding: chunked\r\n\r\n" + chunked
                     + post("u2") + b"GET /v1/ping HTTP/1.1\r\nHost: t\r\nConnection: close"
                     b"\r\n\r\n")  # fmt: skip
        raw = _read_until_closed(sock)
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 4
    users = [json.loads(a.partition(b"\r\n\r\n")[2]).get("user_id") for a in answers]
    assert users == ["u1", "u3", "u2", None]


def test_expect_100_continue_is_answered_before_the_body(server: str) -> None:
    body = json.dumps({"user_id": "u1", "k": 2}).encode()
    with _connect(server, timeout=3) as sock:
        sock.sendall(RECOMMEND + b"Expect: 100-continue\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = _parse(_read_until_closed(sock))
    assert status == 200 and json.loads(answer)["user_id"] == "u1"
    too_big = b"Content-Length: %d\r\n\r\n" % (LIMIT + 1)
    with _connect(server, timeout=3) as sock:  # over the limit: refused, body not invited
        sock.sendall(RECOMMEND + b"Expect: 100-continue\r\n" + too_big)
        status, _, answer = _parse(_read_until_closed(sock))
    assert status == 413 and json.loads(answer)["error"] == "request body too large"


def test_clients_lingering_after_an_error_do_not_stall_the_worker(server: str) -> None:
    """Stock gthread waits (up to 2 s) on the worker's event loop for each refused client
    to close its side; six that never do stalled a worker's every request for 4 s or more."""
    lingering = []
    for _ in range(6):
        sock = _connect(server)
        sock.sendall(b"GARBAGE\r\n\r\n")
        lingering.append(sock)
    try:
        time.sleep(0.1)
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert requests.get(f"{server}/v1/ping", timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.5, slowest
    finally:
        for sock in lingering:
            sock.close()


def test_edge_headers_on_the_wire(server: str) -> None:
    resp = requests.delete(f"{server}/v1/recommendations", timeout=5)
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]
    resp = requests.get(f"{server}/metrics", timeout=5)
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    resp = requests.post(f"{server}/v1/recommendations", data='{"user_id": "u1"}',
                         headers={"Content-Type": "text/plain"}, timeout=5)  # fmt: skip
    assert resp.status_code == 415 and resp.json()["field"] == "Content-Type"
    resp = requests.get(f"{server}/v1/items/m1/similar?k=3&k=999", timeout=5)
    assert resp.status_code == 422 and resp.json()["field"] == "k"
    for path in ("/v1/ping", "/no/such/route", "/"):
        resp = requests.get(f"{server}{path}", timeout=5)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'nonce-" in requests.get(server, timeout=5).headers[
        "Content-Security-Policy"]  # fmt: skip


def _bundle_info(base: str) -> list[str]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith("recsys_bundle_info{")]


def _all_workers_on(base: str, run_id: str, timeout: float = 20.0) -> None:
    deadline, streak = time.monotonic() + timeout, 0
    while streak < 20:
        assert time.monotonic() < deadline, f"workers did not all switch to {run_id}"
        bundle = requests.get(f"{base}/readyz", timeout=5).json()["bundle"]
        streak = streak + 1 if bundle == run_id else 0


def _reload(base: str) -> dict[str, Any]:
    resp = requests.post(f"{base}/admin/reload", headers={"X-Admin-Token": TOKEN}, timeout=60)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_bundle_info_keeps_only_the_served_bundle_after_reloads(
    server: str, edge_artifacts: Path
) -> None:
    """A -> B -> A: each worker reports one line, for run-a (it reported run-b as well)."""
    publish_clone(edge_artifacts, "run-b")
    assert _reload(server)["serving"] == "run-b"
    _all_workers_on(server, "run-b")
    write_current(edge_artifacts, "run-a")
    assert _reload(server)["serving"] == "run-a"
    _all_workers_on(server, "run-a")
    time.sleep(1.5)  # both workers' pollers (1 s) have seen CURRENT settle
    lines = _bundle_info(server)
    assert len(lines) == WORKERS, lines  # one per live worker
    assert all('run_id="run-a"' in line and line.endswith(" 1.0") for line in lines), lines


def test_admin_token_guesses_are_rate_limited(quick_server: str) -> None:
    answers = [
        requests.post(f"{quick_server}/admin/reload",
                      headers={"X-Admin-Token": f"guess-{n}"}, timeout=5)  # fmt: skip
        for n in range(30)
    ]
    statuses = [resp.status_code for resp in answers]
    assert set(statuses) <= {403, 429}
    assert statuses.count(403) <= 10 * WORKERS  # the burst, per worker
    assert statuses.count(429) >= 30 - 10 * WORKERS
    limited = next(resp for resp in answers if resp.status_code == 429)
    assert limited.json() == {"error": "too many invalid admin tokens; retry later",
                              "field": "X-Admin-Token"}  # fmt: skip
    assert int(limited.headers["Retry-After"]) >= 1
    metrics = requests.get(f"{quick_server}/metrics", timeout=5).text
    assert 'recsys_admin_auth_total{outcome="rate_limited"}' in metrics
