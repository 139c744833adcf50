"""The worker's pieces without a server: the read deadline on a socket pair, and the JSON
error answers. The worker itself, under gunicorn, is tested in
tests/e2e/test_service_edge_e2e.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gunicorn.http import errors as herr

from online.gworker import DeadlineSocket, RequestReadTimeout, describe, error_bytes


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_trickling_peer_cannot_stretch_the_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    reader = DeadlineSocket(server, timeout=0.6)
    reader.arm()
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.1 s: each recv alone would succeed
        while not stop.is_set():
            client.send(b"x")
            time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    got = b""
    try:
        with pytest.raises(RequestReadTimeout):
            while True:
                got += reader.recv(1)
    finally:
        stop.set()
        thread.join()
    assert 0.5 < time.monotonic() - started < 1.0
    assert got and reader.timed_out
    assert server.gettimeout() is None  # the socket is left as it was found


def test_disarmed_reads_and_gunicorns_own_timeouts(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    reader = DeadlineSocket(server, timeout=0.2)
    reader.arm()
    client.send(b"ab")
    assert reader.recv(2) == b"ab"
    reader.disarm()
    time.sleep(0.3)
    client.send(b"c")
    assert reader.recv(1) == b"c"  # no deadline once the request has arrived
    # A shorter bound set by gunicorn (its body drain) raises its own socket.timeout.
    reader.arm()
    reader.settimeout(0.05)
    with pytest.raises(TimeoutError) as info:
        reader.recv(1)
    assert not isinstance(info.value, RequestReadTimeout) and not reader.timed_out
    assert server.gettimeout() == 0.05


class _Cfg:
    limit_request_line = 4094
    limit_request_fields = 100
    limit_request_field_size = 8190


@pytest.mark.parametrize(
    ("exc", "status", "error", "field"),
    [
        (herr.LimitRequestLine(5000, 4094), 414, "request line too long (limit 4094 bytes)", None),
        (herr.LimitRequestHeaders("x"), 431,
         "request header fields too large (at most 100 fields of 8190 bytes)", None),
        (herr.InvalidRequestLine("GARBAGE"), 400, "malformed request line", None),
        (herr.InvalidHeader("CONTENT-LENGTH"), 400, "invalid Content-Length header",
         "Content-Length"),
        (herr.UnsupportedTransferCoding("gzip2"), 501, "unsupported Transfer-Encoding",
         "Transfer-Encoding"),
        (herr.InvalidChunkSize(b"zz"), 400, "malformed chunked body", None),
        (herr.InvalidResponseHeader("bad"), 500, "internal error", None),
        (ValueError("boom"), 500, "internal error", None),
    ],
)  # fmt: skip
def test_describe(exc: BaseException, status: int, error: str, field: str | None) -> None:
    assert describe(exc, status, _Cfg()) == (error, field)


def test_content_length_with_transfer_encoding_is_named() -> None:
    class Req:
        headers = [("CONTENT-LENGTH", "5"), ("TRANSFER-ENCODING", "chunked")]

    exc = herr.InvalidHeader("CONTENT-LENGTH", req=Req())
    assert describe(exc, 400)[0] == "Content-Length and Transfer-Encoding together"


def test_error_bytes_is_a_complete_json_answer() -> None:
    raw = error_bytes(431, "", "request header fields too large", None)
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert "Content-Type: application/json" in lines and "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"error": "request header fields too large", "field": None}


def test_the_master_loads_the_worker_class_without_the_app_or_metrics(tmp_path: Path) -> None:
    """gunicorn's master imports the worker class (and the config module): neither may pull
    in Flask, prometheus_client (its multiprocess mode is set up for the workers) or FAISS."""
    repo = Path(__file__).resolve().parents[2]
    code = (
        "import sys, online.gworker, online.gunicorn_conf; print(','.join(m for m in "
        "('flask', 'prometheus_client', 'faiss', 'onnxruntime') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PROMETHEUS_"))}
    env |= {"RECSYS_ARTIFACTS": str(tmp_path), "RECSYS_RUNTIME_DIR": str(tmp_path),
            "PYTHONPATH": str(repo)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == ""
