"""The gunicorn worker the service runs (`worker_class` in gunicorn_conf): gthread, hardened
at the edge, where gunicorn answers or waits before the Flask app is reached.

* **Slow clients cannot take the application's threads.** Stock gthread reads a request's
  body inside the application, on one of its `threads` (1 per worker here): a client that
  announces `Content-Length: 100` and sends 11 bytes holds that thread for ever, and two
  such connections stop a two-worker server. Here a request is read, headers and body, by
  one of `read_threads` threads (32), under a deadline (`read_timeout`, 10 s from its first
  byte, with a per-recv timeout set to what is left of it, so trickling a byte at a time
  does not stretch it). Only a request that has fully arrived takes one of the `threads`
  application slots, with its body in memory. Late: 408 in JSON and the connection closes.
  A new connection waits for its first byte in the event loop, on no thread at all.
* **Errors gunicorn answers itself are JSON**, `{"error", "field"}` like the application's
  (414 request line too long, 431 header fields too large, 400 malformed request line,
  header, Content-Length or chunked framing, 501 unknown Transfer-Encoding, 417 Expect):
  gunicorn still chooses the status and logs the refusal; only the words change.
* **Closing a connection never blocks the event loop.** Stock gthread closes an answered
  connection "gracefully" (half-close, then wait up to 2 s for the peer) on the thread that
  accepts and dispatches every connection of the worker, so a client that keeps its side
  open after a 400 stalls the whole worker for 2 s. Here that wait runs on its own thread.

This module is loaded by the gunicorn master too (to check the worker class): it imports
neither Flask nor prometheus_client at import time.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import gunicorn
from gunicorn import util
from gunicorn.http import errors as herr
from gunicorn.http.body import LengthReader
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker
from pydantic import ValidationError

from online.config import ServiceConfig

log = logging.getLogger(__name__)

# This extends gthread's event loop as gunicorn 27 has it (pending connections, the parser's
# socket unreader); constraints.txt pins 27.0.1 and the e2e tests run against it.
if tuple(gunicorn.version_info[:1]) < (27,):
    raise ImportError(f"online.gworker needs gunicorn 27, found {gunicorn.__version__}")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestReadTimeout(Exception):
    """The request did not arrive (headers and body) within the read deadline.

    Not an OSError on purpose: gunicorn treats those as a vanished client and closes in
    silence, where this one is answered with 408.
    """


class DeadlineSocket:
    """What the request parser reads from: the connection's socket, with `recv` bounded by
    the current request's deadline once armed.

    `arm()` at the start of each request: its first `recv` starts the clock; each `recv`
    then waits at most what is left. `disarm()` once the request has arrived: the answer's
    writes and gunicorn's own bounded body drain are not subject to it. Everything else is
    the socket's own.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._armed = False
        self._deadline: float | None = None
        self.timed_out = False

    def arm(self) -> None:
        self._armed, self._deadline = True, None

    def disarm(self) -> None:
        self._armed, self._deadline = False, None

    def recv(self, size: int) -> bytes:
        if not self._armed:
            return self._sock.recv(size)
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._timeout
        remaining = self._deadline - now
        if remaining <= 0:
            self.timed_out = True
            raise RequestReadTimeout()
        prior = self._sock.gettimeout()  # None (blocking), or a bound gunicorn set itself
        ours = prior is None or remaining <= prior
        self._sock.settimeout(remaining if ours else prior)
        try:
            return self._sock.recv(size)
        except TimeoutError:
            if not ours:
                raise
            self.timed_out = True
            raise RequestReadTimeout() from None
        finally:
            self._sock.settimeout(prior)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Closer:
    """One thread per worker for graceful closes (half-close, then wait for the peer, at
    most 2 s each); past `backlog` waiting sockets, plain closes."""

    backlog = 256

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close(self, sock: socket.socket) -> None:
        if self._queue.qsize() >= self.backlog:  # a flood of them: close the rest at once
            util.close(sock)
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="closer", daemon=True)
                self._thread.start()
        self._queue.put(sock)

    def _run(self) -> None:
        while True:
            sock = self._queue.get()
            try:
                sock.setblocking(True)
                util.close_graceful(sock)
            except Exception:  # a socket already gone: nothing left to close
                util.close(sock)


class _Conn(TConn):
    """A gthread connection whose HTTP/1 parser reads through a DeadlineSocket."""

    reader: DeadlineSocket | None = None
    read_timeout: float = 10.0
    closer: _Closer | None = None

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if fresh and isinstance(self.parser, RequestParser):
            unreader = self.parser.unreader
            if isinstance(unreader, SocketUnreader) and not isinstance(
                unreader.sock, DeadlineSocket
            ):
                self.reader = DeadlineSocket(unreader.sock, self.read_timeout)
                self.reader.arm()
                unreader.sock = self.reader

    def close(self, graceful: bool = False) -> None:
        timed_out = self.reader is not None and self.reader.timed_out
        if graceful and not timed_out and self.closer is not None:
            self.closer.close(self.sock)  # the event loop does not wait for the peer
        else:
            # A client too slow to send its request gets its 408 and an immediate close.
            util.close(self.sock)


class _StatusCapture:
    """Stands in for the client socket while gunicorn's own handle_error runs: it keeps
    the status gunicorn chose and drops gunicorn's HTML page."""

    status: int | None = None
    reason = ""

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock then writes straight to sendall

    def sendall(self, data: bytes) -> None:
        line = bytes(data).split(b"\r\n", 1)[0].decode("latin-1")  # HTTP/1.1 414 URI Too Long
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            self.status = int(parts[1])
            self.reason = parts[2] if len(parts) == 3 else ""

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_BY_STATUS = {
    400: "bad request",
    403: "forbidden",
    408: "request not received in time",
    414: "request line too long",
    417: "unsupported expectation",
    431: "request header fields too large",
    500: "internal error",
    501: "not implemented",
}


_CHUNK_ERRORS = (herr.InvalidChunkSize, herr.ChunkMissingTerminator, herr.InvalidChunkExtension)


def _header_name(raw: str) -> str:
    return "-".join(part.capitalize() for part in raw.split("-"))


def describe(exc: BaseException, status: int, cfg: Any = None) -> tuple[str, str | None]:
    """The words of the JSON error for an exception gunicorn refused a request with."""
    if isinstance(exc, herr.LimitRequestLine):
        limit = getattr(cfg, "limit_request_line", None)
        return "request line too long" + (f" (limit {limit} bytes)" if limit else ""), None
    if isinstance(exc, herr.LimitRequestHeaders):
        fields = getattr(cfg, "limit_request_fields", None)
        size = getattr(cfg, "limit_request_field_size", None)
        limits = f" (at most {fields} fields of {size} bytes)" if fields and size else ""
        return "request header fields too large" + limits, None
    if isinstance(exc, herr.InvalidRequestLine):
        return "malformed request line", None
    if isinstance(exc, herr.InvalidRequestMethod):
        return "invalid request method", None
    if isinstance(exc, herr.InvalidHTTPVersion):
        return "unsupported HTTP version", None
    if isinstance(exc, herr.UnsupportedTransferCoding):
        return "unsupported Transfer-Encoding", "Transfer-Encoding"
    if isinstance(exc, herr.ExpectationFailed):
        return "unsupported Expect header", "Expect"
    if isinstance(exc, _CHUNK_ERRORS):
        return "malformed chunked body", None
    if isinstance(exc, herr.ObsoleteFolding):
        return "obsolete line folding in a header", None
    if isinstance(exc, herr.InvalidHeaderName):
        return "invalid header name", None
    if isinstance(exc, herr.InvalidHeader) and status < 500:
        name = _header_name(str(getattr(exc, "hdr", "") or ""))
        req = getattr(exc, "req", None)
        names = {n for n, _ in getattr(req, "headers", None) or []}
        if {"CONTENT-LENGTH", "TRANSFER-ENCODING"} <= names:
            return "Content-Length and Transfer-Encoding together", name or None
        return (f"invalid {name} header" if name else "invalid header"), name or None
    return _BY_STATUS.get(status, "bad request" if status < 500 else "internal error"), None


def error_bytes(status: int, reason: str, error: str, field: str | None) -> bytes:
    """A complete HTTP/1.1 error answer in the service's JSON shape; the connection closes."""
    body = json.dumps({"error": error, "field": field}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Error')}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def edge_settings() -> tuple[float, int, int]:
    """read_timeout, read_threads and max_content_length from RECSYS_* (the defaults when
    the worker runs without them, as in a bare `gunicorn -c` without RECSYS_ARTIFACTS)."""
    try:
        cfg = ServiceConfig.from_env()
        return cfg.read_timeout, cfg.read_threads, cfg.max_content_length
    except ValidationError:
        fields = ServiceConfig.model_fields
        return (
            float(fields["read_timeout"].default),
            int(fields["read_threads"].default),
            int(fields["max_content_length"].default),
        )


def _count(status: int) -> None:
    try:
        from online import metrics  # the worker's; never imported by the master

        metrics.ERRORS.labels(f"http_{status}").inc()
    except Exception:  # metrics must never stop an error answer
        log.debug("error counter unavailable", exc_info=True)


class RecsysWorker(ThreadWorker):
    """gthread with the request read off the application's threads (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        read_timeout, read_threads, self.max_body = edge_settings()
        self.read_timeout = read_timeout
        self.read_threads = max(read_threads, int(self.cfg.threads))
        self.app_slots = threading.BoundedSemaphore(int(self.cfg.threads))
        self.closer = _Closer()

    def run(self) -> None:
        """Serve, once start-up is over: gunicorn calls this after post_worker_init, which
        has loaded the bundle, so everything alive now lives as long as the worker and is
        frozen out of the garbage collector's full passes (online/gc_tuning.py)."""
        from online import gc_tuning

        gc_tuning.observe_pauses()
        frozen = gc_tuning.freeze_heap()
        self.log.debug("froze %d objects out of the cyclic GC", frozen)
        super().run()

    def get_thread_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.read_threads, thread_name_prefix="conn")

    def accept(self, listener: socket.socket) -> None:
        """Accept, then wait for the first byte in the event loop (stock gthread spends a
        pool thread on that wait, up to 5 s)."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.read_timeout, conn.closer = self.read_timeout, self.closer
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        waiting = partial(self.on_pending_socket_readable, conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, waiting)

    def handle(self, conn: TConn) -> Any:
        reader = getattr(conn, "reader", None)
        if reader is not None:
            reader.arm()  # a kept-alive connection's next request: a new deadline
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> bool:
        reader = getattr(conn, "reader", None)
        try:
            must_close = self._buffer_body(req, conn)
        finally:
            if reader is not None:
                reader.disarm()
        if must_close:
            req.force_close()
        with self.app_slots:  # the application runs `threads` requests at a time
            return bool(super().handle_request(req, conn))

    def _buffer_body(self, req: Any, conn: TConn) -> bool:
        """Read the body into memory (at most max_body + 1 bytes, under the deadline) and
        hand the application that copy. True when the connection must close after the
        answer: a body left unread on the socket (over the limit) cannot be skipped."""
        body = getattr(req, "body", None)
        reader = getattr(body, "reader", None)
        if body is None:
            return False
        declared = reader.length if isinstance(reader, LengthReader) else None
        if declared == 0:
            return False
        if declared is not None and declared > self.max_body:
            # The application answers 413 from the header; the body is never invited.
            req._expected_100_continue = False
            return True
        if getattr(req, "_expected_100_continue", False):
            conn.sock.sendall(_CONTINUE)  # sent here, before the read, not by wsgi.create
            req._expected_100_continue = False
        data = body.read(self.max_body + 1)
        if declared is not None and len(data) < declared:
            raise herr.NoMoreData(data)  # the client left mid-body: nobody to answer
        req.body = io.BytesIO(data)
        # Chunked and longer than the limit: the application sees max_body + 1 bytes and
        # answers 413, exactly as for a Content-Length over the limit.
        return len(data) > self.max_body

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestReadTimeout):
            where = (addr or ("",))[0]
            self.log.warning("Request from ip=%s not received in %g s", where, self.read_timeout)
            status, reason = 408, _REASONS[408]
            error, field = f"request not received within {self.read_timeout:g} s", None
        else:
            capture = _StatusCapture()
            super().handle_error(req, capture, addr, exc)  # gunicorn's status and logging
            status = capture.status or 500
            reason = _REASONS.get(status) or capture.reason
            error, field = describe(exc, status, self.cfg)
        _count(status)
        try:
            util.write_nonblock(client, error_bytes(status, reason, error, field))
        except Exception:
            self.log.debug("Failed to send error message.")
