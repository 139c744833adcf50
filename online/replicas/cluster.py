"""N `recsys serve` replicas on one artifacts dir, HAProxy in front, optional shared Redis.

The replicas are `shared.service_process` servers on free loopback ports, each in its own
process group (a kill takes its workers too) and runtime dir; HAProxy balances over them
with health checks on /readyz (online/replicas/haproxy.cfg.tmpl) and exposes its runtime
API on an admin socket, which the rolling restart uses: one replica at a time is drained,
waited idle, restarted, waited ready and UP in HAProxy's own checks, then taken back.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from online.replicas.haproxy_config import BACKEND, HaproxySettings, render, server_name
from online.replicas.haproxy_runtime import RuntimeApi, RuntimeApiError, ServerStat
from online.replicas.redis_server import RedisServer, start_redis
from shared.errors import UsageError
from shared.service_process import HOST, ServiceProcess, ServiceStartError, free_port, start_service


@dataclass(frozen=True)
class ClusterSettings:
    artifacts: Path
    state_dir: Path  # config, admin socket, logs, each replica's runtime dir
    replicas: int = 2
    workers: int = 1  # per replica
    threads: int = 1
    port: int = 0  # HAProxy's; 0: a free one
    redis: bool = False  # start a private redis-server for the real-time store
    redis_url: str | None = None  # or use this one
    serve_args: tuple[str, ...] = ()  # more `recsys serve` flags, for every replica
    env: Mapping[str, str] = field(default_factory=dict)  # RECSYS_* for every replica
    drain_timeout_s: float = 30.0
    ready_timeout_s: float = 120.0
    conns_per_thread: int = 4  # HAProxy's maxconn per replica, per application thread

    @property
    def maxconn(self) -> int:
        # Four per application thread by default: one running, the next ones read and
        # waiting, so a thread never idles on HAProxy's dequeue round trip (2 per thread
        # halved throughput on 2 busy cores, docs/replicas.md); the rest queue in HAProxy,
        # bounded: a killed replica loses at most what it holds.
        return self.conns_per_thread * self.workers * self.threads


@dataclass(frozen=True)
class RestartTiming:
    name: str
    drain_s: float  # drain until no request was on it
    restart_s: float  # stop, start, /readyz
    back_s: float  # until HAProxy's checks had it UP


def haproxy_binary() -> str:
    binary = shutil.which("haproxy")
    if binary is None:
        raise UsageError("haproxy not found: `make setup` installs it (apt-get install "
                         "haproxy), or install HAProxy 2.6+ yourself")  # fmt: skip
    return binary


class Cluster:
    def __init__(self, settings: ClusterSettings) -> None:
        if settings.replicas < 1:
            raise UsageError("--replicas must be at least 1")
        self.settings = settings
        self.state_dir = settings.state_dir
        self.ports = tuple(free_port() for _ in range(settings.replicas))
        self.port = settings.port or free_port()
        self.admin_socket = self.state_dir / "haproxy.sock"
        self.api = RuntimeApi(self.admin_socket)
        self.replicas: list[ServiceProcess | None] = [None] * settings.replicas
        self.redis: RedisServer | None = None
        self.haproxy: subprocess.Popen[bytes] | None = None

    @property
    def names(self) -> list[str]:
        return [server_name(i) for i in range(self.settings.replicas)]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def redis_url(self) -> str | None:
        return self.redis.url if self.redis is not None else self.settings.redis_url

    def replica_url(self, index: int) -> str:
        return f"http://{HOST}:{self.ports[index]}"

    # -- start and stop -------------------------------------------------------------------

    def start(self) -> Cluster:
        """Redis (if asked), every replica (ready), HAProxy (every replica UP)."""
        binary = haproxy_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.settings.redis:
                self.redis = start_redis(self.state_dir, self.state_dir / "redis.log")
            for i in range(self.settings.replicas):
                self._start_replica(i)
            self._start_haproxy(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_replica(self, index: int) -> ServiceProcess:
        name = server_name(index)
        env = {"RECSYS_RUNTIME_DIR": str(self.state_dir / name), **self.settings.env}
        if self.redis_url:
            env["RECSYS_REDIS_URL"] = self.redis_url
        args = ["--threads", str(self.settings.threads), *self.settings.serve_args]
        replica = start_service(
            self.settings.artifacts, self.state_dir / f"{name}.log", port=self.ports[index],
            workers=self.settings.workers, args=args, env=env, append_log=True,
            ready_timeout_s=self.settings.ready_timeout_s, new_session=True,
        )  # fmt: skip
        self.replicas[index] = replica
        return replica

    def _start_haproxy(self, binary: str) -> None:
        config = self.state_dir / "haproxy.cfg"
        config.write_text(render(HaproxySettings(
            port=self.port, admin_socket=self.admin_socket, replica_ports=self.ports,
            maxconn=self.settings.maxconn,
        )))  # fmt: skip
        log_path = self.state_dir / "haproxy.log"
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True,
                               text=True)  # fmt: skip
        if check.returncode != 0:
            raise ServiceStartError(f"haproxy refused {config}: {check.stderr.strip()}")
        self.admin_socket.unlink(missing_ok=True)
        with log_path.open("wb") as log:
            # -db: stay in the foreground, a child this process stops; -W would fork.
            # Own session: a Ctrl-C in the shell reaches the supervisor only, which stops
            # everything in order.
            self.haproxy = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.api.answers():
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise ServiceStartError(f"haproxy did not start; {log_path}:\n"
                                        f"{log_path.read_text(errors='replace')[-2000:]}")  # fmt: skip
            time.sleep(0.05)
        for name in self.names:
            self.api.wait_for(BACKEND, name, "UP", 10, "UP")

    def stop(self) -> None:
        """HAProxy first (soft stop: it finishes what it holds), then the replicas (SIGTERM,
        a clean stop of their workers), then Redis."""
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.send_signal(signal.SIGUSR1)
            try:
                self.haproxy.wait(15)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()
        for replica in self.replicas:
            if replica is not None:
                replica.stop(timeout_s=30)
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- operations -----------------------------------------------------------------------

    def stats(self) -> dict[str, ServerStat]:
        return self.api.servers(BACKEND)

    def kill(self, index: int, gone_timeout_s: float = 5.0) -> None:
        """SIGKILL the replica and its workers, as a machine or container dies; returns once
        its port refuses connections. Until the last worker is gone the kernel still
        accepts connections into its listen backlog: requests that are lost with it."""
        replica = self.replicas[index]
        if replica is not None:
            replica.kill()
        deadline = time.monotonic() + gone_timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.ports[index]), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.005)
        raise RuntimeApiError(f"{server_name(index)} still accepts connections "
                              f"{gone_timeout_s:g} s after SIGKILL")  # fmt: skip

    def revive(self, index: int) -> None:
        """Start a killed or stopped replica again; HAProxy's checks take it back."""
        self._start_replica(index)
        self.api.wait_for(BACKEND, server_name(index), "UP", 30, "UP")

    def restart(self, index: int) -> RestartTiming:
        """Drain, wait idle, stop, start, wait ready, put back, wait UP: no request lost."""
        name = server_name(index)
        t0 = time.monotonic()
        self.api.set_state(BACKEND, name, "drain")
        self.api.wait_idle(BACKEND, name, self.settings.drain_timeout_s)
        t1 = time.monotonic()
        replica = self.replicas[index]
        if replica is not None:
            replica.stop(timeout_s=30)
        self._start_replica(index)
        t2 = time.monotonic()
        # Still DOWN in HAProxy's checks from the stop: no request reaches it before two
        # good checks (rise 2) have seen it ready.
        self.api.set_state(BACKEND, name, "ready")
        self.api.wait_for(BACKEND, name, "UP", 30, "UP")
        return RestartTiming(name, t1 - t0, t2 - t1, time.monotonic() - t2)

    def rolling_restart(self, indexes: Sequence[int] | None = None) -> list[RestartTiming]:
        """Every replica (or those given) in turn; the others carry the load meanwhile."""
        order = range(self.settings.replicas) if indexes is None else indexes
        return [self.restart(i) for i in order]
