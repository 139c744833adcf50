"""Run `recsys serve` as a child process: the one way the end-to-end tests, the benchmarks
and the traffic simulator start a real server (gunicorn, its workers, the real sockets).

The child gets the caller's environment without any RECSYS_* setting or
PROMETHEUS_MULTIPROC_DIR (a variable of the calling shell must not change what is tested or
measured), plus the overrides given. It is ready once `ready_path` answers 200; it is
stopped with SIGTERM, which `recsys serve` (it execs gunicorn) turns into a clean stop of
every worker: their buffered log records are written before the process exits.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import RecsysError

HOST = "127.0.0.1"


class ServiceStartError(RecsysError):
    """The server exited or did not become ready; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def recsys_command() -> list[str]:
    """The `recsys` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("recsys")
    return [str(script)] if script.exists() else [sys.executable, "-m", "shared.cli"]


def clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RECSYS_") and k != "PROMETHEUS_MULTIPROC_DIR"}  # fmt: skip
    env.update(overrides or {})
    return env


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    own_group: bool = False  # started with new_session: its pid is its process group's

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a clean stop of every worker), SIGKILL if it outlasts timeout_s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> int:
        """SIGKILL, no clean stop: the whole process group when started with new_session
        (the workers die with the master), else the master alone."""
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):  # the whole group, even orphans
                os.killpg(self.proc.pid, signal.SIGKILL)
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return int(self.proc.returncode)


def _answers_200(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_service(
    artifacts: Path,
    log_path: Path,
    *,
    port: int | None = None,
    workers: int = 2,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = "/readyz",
    ready_timeout_s: float = 120.0,
    append_log: bool = False,
    new_session: bool = False,
) -> ServiceProcess:
    """`recsys serve --artifacts ARTIFACTS --port PORT --workers N ARGS`, once ready.

    env: overrides on top of the cleaned environment; cwd: gunicorn puts its working
    directory first on the workers' sys.path (a benchmark of another checkout runs there);
    new_session: the server and its workers in their own process group, so that `kill()`
    takes them all at once (as a machine or container dies), not the master alone."""
    port = port or free_port()
    argv = [*recsys_command(), "serve", "--artifacts", str(artifacts), "--port", str(port),
            "--workers", str(workers), *args]  # fmt: skip
    with log_path.open("ab" if append_log else "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=clean_env(env),
                                cwd=cwd, start_new_session=new_session)  # fmt: skip
    service = ServiceProcess(proc, port, log_path, own_group=new_session)
    deadline = time.monotonic() + ready_timeout_s
    while not _answers_200(port, ready_path):
        if proc.poll() is not None:
            raise ServiceStartError(f"recsys serve exited with {proc.returncode} before "
                                    f"{ready_path} answered; {log_path}:\n{service.log_tail()}")  # fmt: skip
        if time.monotonic() > deadline:
            service.stop(timeout_s=10)
            raise ServiceStartError(f"recsys serve not ready ({ready_path}) in "
                                    f"{ready_timeout_s:.0f} s; {log_path}:\n{service.log_tail()}")  # fmt: skip
        time.sleep(0.2)
    return service


@contextlib.contextmanager
def running_service(artifacts: Path, log_path: Path, *, stop_timeout_s: float = 60.0,
                    **kwargs: object) -> Iterator[ServiceProcess]:  # fmt: skip
    """start_service(...) for the block, stopped cleanly at its end (also on error)."""
    service = start_service(artifacts, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield service
    finally:
        service.stop(stop_timeout_s)
