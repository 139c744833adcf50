"""HAProxy's runtime API over its admin socket: server states and counts, drain and ready.

One command per connection (the socket's non-interactive mode: HAProxy answers and closes).
"""

from __future__ import annotations

import csv
import io
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import RecsysError


class RuntimeApiError(RecsysError):
    """HAProxy refused a command, or a wait on a server's state ran out of time."""


@dataclass(frozen=True)
class ServerStat:
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" (rising), "DOWN 1/2" (falling), no check
    current_sessions: int  # requests on this server right now (scur)
    queued: int  # waiting in HAProxy for this server (qcur)
    total: int  # sessions since start (stot)


class RuntimeApi:
    def __init__(self, socket_path: Path, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def answers(self) -> bool:
        try:
            self.command("show info")
        except OSError:
            return False
        return True

    def servers(self, backend: str) -> dict[str, ServerStat]:
        text = self.command("show stat").lstrip("# ")
        out: dict[str, ServerStat] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") != backend or row["svname"] in ("FRONTEND", "BACKEND"):
                continue
            out[row["svname"]] = ServerStat(
                name=row["svname"],
                status=row["status"],
                current_sessions=int(row["scur"] or 0),
                queued=int(row["qcur"] or 0),
                total=int(row["stot"] or 0),
            )
        return out

    def server(self, backend: str, name: str) -> ServerStat:
        try:
            return self.servers(backend)[name]
        except KeyError:
            raise RuntimeApiError(f"HAProxy has no server {backend}/{name}") from None

    def set_state(self, backend: str, name: str, state: str) -> None:
        """ready | drain (no new requests, health checks go on) | maint."""
        answer = self.command(f"set server {backend}/{name} state {state}").strip()
        if answer:  # success is silent
            raise RuntimeApiError(f"set server {backend}/{name} state {state}: {answer}")

    def wait_for(self, backend: str, name: str, ok: str, timeout_s: float,
                 what: str) -> ServerStat:  # fmt: skip
        """Poll until the server's status is `ok`, or raise after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            stat = self.server(backend, name)
            if stat.status == ok:
                return stat
            if time.monotonic() > deadline:
                raise RuntimeApiError(f"{backend}/{name} not {what} in {timeout_s:g} s "
                                      f"(status {stat.status})")  # fmt: skip
            time.sleep(0.05)

    def wait_idle(self, backend: str, name: str, timeout_s: float) -> None:
        """Poll until no request is on the server nor queued for it (a drain's end)."""
        deadline = time.monotonic() + timeout_s
        while True:
            stat = self.server(backend, name)
            if stat.current_sessions == 0 and stat.queued == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeApiError(f"{backend}/{name} still has {stat.current_sessions} "
                                      f"requests after {timeout_s:g} s of drain")  # fmt: skip
            time.sleep(0.02)
