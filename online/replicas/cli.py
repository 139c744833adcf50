"""`recsys replicas up|roll|status|down`: replicas behind HAProxy, from a shell.

`up` stays in the foreground as the supervisor of every process it starts (HAProxy, the
replicas, Redis) and writes STATE_DIR/replicas.json; SIGHUP makes it restart the replicas
one at a time (what `roll` sends), SIGTERM or Ctrl-C stops everything (what `down` sends).
The other commands find it through that file.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from online.replicas.cluster import Cluster, ClusterSettings
from shared.errors import RecsysError, UsageError

STATE_FILE = "replicas.json"
_STATE_DIR = typer.Option(Path(".recsys-replicas"), "--state-dir",
                          help="config, admin socket, logs and replicas.json")  # fmt: skip


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        raise UsageError(f"no {state_dir / STATE_FILE}: is `recsys replicas up` running "
                         f"with --state-dir {state_dir}?") from None  # fmt: skip
    return state


def _write_state(cluster: Cluster, extra: dict[str, Any]) -> None:
    state = {
        "pid": os.getpid(),
        "url": cluster.base_url,
        "admin_socket": str(cluster.admin_socket),
        "redis_url": cluster.redis_url,
        "replicas": [{"name": n, "url": cluster.replica_url(i)}
                     for i, n in enumerate(cluster.names)],  # fmt: skip
        **extra,
    }
    tmp = cluster.state_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(cluster.state_dir / STATE_FILE)  # readers never see half a file


def _supervise(cluster: Cluster) -> None:
    """Until SIGTERM/SIGINT: a rolling restart per SIGHUP, its outcome in the state file."""
    wanted: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: wanted.append(signum))
    rolls: dict[str, Any] = {"rolls": 0, "last_roll": None, "last_error": None}
    _write_state(cluster, rolls)
    while True:
        while not wanted:
            time.sleep(0.1)
        if wanted.pop(0) != signal.SIGHUP:
            return
        try:
            timings = cluster.rolling_restart()
            rolls["last_roll"], rolls["last_error"] = [asdict(t) for t in timings], None
        except RecsysError as exc:  # a replica that would not come back; the others serve
            rolls["last_error"] = str(exc)
        rolls["rolls"] += 1
        _write_state(cluster, rolls)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Service replicas behind HAProxy (docs/replicas.md).",
                        no_args_is_help=True)  # fmt: skip
    app.add_typer(group, name="replicas")

    @group.command("up")
    def up(
        artifacts: Path = typer.Option(..., "--artifacts", help="artifact root all share"),
        replicas: int = typer.Option(2, "--replicas", help="recsys serve instances"),
        workers: int = typer.Option(1, "--workers", help="gunicorn workers per replica"),
        threads: int = typer.Option(1, "--threads", help="threads per worker"),
        port: int = typer.Option(8080, "--port", help="HAProxy's port (0: a free one)"),
        state_dir: Path = _STATE_DIR,
        redis: bool = typer.Option(False, "--redis", help="start a redis-server for the "
                                   "real-time store the replicas share"),  # fmt: skip
        redis_url: str | None = typer.Option(None, "--redis-url", help="or use this one"),
        serve_arg: list[str] = typer.Option([], "--serve-arg", help="a `recsys serve` flag "
                                            "for every replica (repeat)"),  # fmt: skip
    ) -> None:
        """Start the replicas and HAProxy, then supervise them until SIGTERM or Ctrl-C."""
        if redis and redis_url:
            raise UsageError("--redis starts a Redis; --redis-url names one: not both")
        settings = ClusterSettings(
            artifacts=artifacts, state_dir=state_dir.resolve(), replicas=replicas,
            workers=workers, threads=threads, port=port, redis=redis, redis_url=redis_url,
            serve_args=tuple(serve_arg),
        )  # fmt: skip
        with Cluster(settings) as cluster:
            typer.echo(f"{replicas} replicas behind {cluster.base_url} (admin socket "
                       f"{cluster.admin_socket}); `recsys replicas roll|status|down "
                       f"--state-dir {state_dir}`")  # fmt: skip
            _supervise(cluster)
        (settings.state_dir / STATE_FILE).unlink(missing_ok=True)

    @group.command("roll")
    def roll(state_dir: Path = _STATE_DIR,
             timeout_s: float = typer.Option(600, "--timeout-s")) -> None:  # fmt: skip
        """Restart every replica in turn (drain, idle, restart, ready, back) and wait."""
        state = _read_state(state_dir)
        before = state["rolls"]
        os.kill(state["pid"], signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while (state := _read_state(state_dir))["rolls"] == before:
            if time.monotonic() > deadline:
                raise RecsysError(f"the rolling restart did not finish in {timeout_s:g} s")
            time.sleep(0.2)
        if state["last_error"]:
            raise RecsysError(f"rolling restart stopped: {state['last_error']}")
        for t in state["last_roll"]:
            typer.echo(f"{t['name']}: drained in {t['drain_s']:.2f} s, restarted in "
                       f"{t['restart_s']:.1f} s, UP after {t['back_s']:.2f} s")  # fmt: skip

    @group.command("status")
    def status(state_dir: Path = _STATE_DIR) -> None:
        """Each replica as HAProxy sees it: status, requests now, requests so far."""
        from online.replicas.haproxy_config import BACKEND
        from online.replicas.haproxy_runtime import RuntimeApi

        state = _read_state(state_dir)
        stats = RuntimeApi(Path(state["admin_socket"])).servers(BACKEND)
        typer.echo(f"{state['url']}  redis: {state['redis_url'] or 'none'}")
        for replica in state["replicas"]:
            s = stats[replica["name"]]
            typer.echo(f"{s.name}  {replica['url']}  {s.status:<8} now {s.current_sessions}"
                       f"  queued {s.queued}  total {s.total}")  # fmt: skip

    @group.command("down")
    def down(state_dir: Path = _STATE_DIR,
             timeout_s: float = typer.Option(90, "--timeout-s")) -> None:  # fmt: skip
        """Stop HAProxy, the replicas and Redis (SIGTERM to the supervisor), and wait."""
        pid = int(_read_state(state_dir)["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while (state_dir / STATE_FILE).exists():
            if time.monotonic() > deadline:
                raise RecsysError(f"supervisor {pid} still running after {timeout_s:g} s")
            time.sleep(0.2)
        typer.echo("stopped")
