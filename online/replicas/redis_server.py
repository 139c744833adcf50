"""A private redis-server for the replicas' shared real-time store (no persistence: the
state is recent activity with a TTL, rebuilt from new events after a restart)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UsageError
from shared.service_process import HOST, ServiceStartError, free_port


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: Path, log_path: Path, timeout_s: float = 10.0) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise UsageError("redis-server not found: `make setup` installs it (apt-get install "
                         "redis-server), or pass --redis-url of a running one")  # fmt: skip
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],  # fmt: skip
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # as HAProxy's
        )
    server = RedisServer(proc, port)
    deadline = time.monotonic() + timeout_s
    while not _pongs(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop(1)
            raise ServiceStartError(f"redis-server did not start on port {port}; {log_path}")
        time.sleep(0.05)
    return server
