"""Start, inspect and stop a Spark standalone cluster (one master, N workers) on this machine.

It runs the installed pyspark's own launcher (`bin/spark-class ...deploy.master.Master` /
`...deploy.worker.Worker`), every daemon bound to one host (127.0.0.1 by default), on free
ports, with its logs, work and local directories under one cluster directory. The state
(pids, ports, the master URL) is kept in `<dir>/cluster.json`, so `stop` and `status` work
from another process. Each daemon is a session leader of its own process group: the
executors and Python workers a worker starts belong to its group, so stopping the group
leaves no stray JVM.

Workers may be started with paths hidden from them (`hide_from_workers`, Linux and root
only: a private mount namespace with an empty tmpfs over each path). On one machine the
driver's disk *is* the executors' disk; hiding the driver's private directories (its
TMPDIR, its checkout) from the workers turns every accidental reliance on that into a
failed task, which is how the e2e test proves that only the configured data/artifact
paths need to be shared storage (docs/cluster.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path

from shared.errors import RecsysError

STATE_FILE = "cluster.json"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"

# Mounts an empty read-only tmpfs over each of the first $1 arguments, then execs the rest:
# run under `unshare --mount`, the mounts are private to the worker and its children.
_HIDE_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount -t tmpfs -o size=1m,mode=0555 recsys-hidden "$1" || exit 97; '
    "shift; n=$((n-1)); done; exec \"$@\""
)


class ClusterError(RecsysError):
    exit_code = 2


def spark_home() -> Path:
    """pyspark 4's package directory is a complete SPARK_HOME (bin/, jars/); a SPARK_HOME
    from the shell pointing at another Spark would mix versions, so it is not used."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ClusterError("pyspark is not installed (install the batch extra)")
    home = Path(spec.origin).parent
    if not (home / "bin" / "spark-class").exists():
        raise ClusterError(f"{home}/bin/spark-class missing: pyspark-client is not a full pyspark")
    return home


def free_port(host: str) -> int:
    """A port free now (the OS picks it); the daemon binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    role: str  # "master" or "worker-<n>"
    pid: int
    port: int
    webui_port: int
    log: str


@dataclass
class ClusterState:
    directory: str
    host: str
    master_url: str
    webui_url: str
    worker_cores: int
    worker_memory: str
    daemons: list[Daemon] = field(default_factory=list)
    hidden_from_workers: list[str] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        os.replace(partial, path)

    @classmethod
    def load(cls, directory: Path) -> ClusterState:
        path = directory / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster state in {directory} (not started, or stopped)")
        raw = json.loads(path.read_text())
        raw["daemons"] = [Daemon(**d) for d in raw["daemons"]]
        return cls(**raw)


def master_status(webui_url: str, timeout_s: float = 2.0) -> dict[str, object]:
    """The master web UI's JSON (`/json/`): status, workers with their state and cores."""
    with urllib.request.urlopen(f"{webui_url}/json/", timeout=timeout_s) as resp:  # noqa: S310
        return dict(json.load(resp))


def alive_workers(status: dict[str, object]) -> list[dict[str, object]]:
    workers = status.get("workers", [])
    return [w for w in workers if isinstance(w, dict) and w.get("state") == "ALIVE"]  # type: ignore[union-attr]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_pids(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (Linux /proc; elsewhere only the leader)."""
    proc = Path("/proc")
    if not proc.exists():
        return [pgid] if _alive(pgid) else []
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


class StandaloneCluster:
    """`start()` brings up a master and `workers` workers and waits for their registration;
    `stop()` ends every process they started."""

    def __init__(self, directory: Path, workers: int = 2, cores: int = 1, memory: str = "2g",
                 host: str = "127.0.0.1", python: str | None = None,
                 hide_from_workers: tuple[Path, ...] = ()) -> None:
        self.directory = directory.resolve()
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.host = host
        # Executors start Python workers with PYSPARK_PYTHON: it must be the interpreter
        # that has pandas, faiss and onnxruntime (the project's venv), not whatever
        # `python3` the worker's PATH finds.
        self.python = python or os.environ.get("PYSPARK_PYTHON") or sys.executable
        self.hide_from_workers = tuple(p.resolve() for p in hide_from_workers)

    # -- processes -------------------------------------------------------------------------

    def _env(self, local_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_LOCAL_DIRS": str(local_dir),
            "SPARK_LOG_DIR": str(self.directory / "logs"),
            "PYSPARK_PYTHON": self.python,
            # No code reaches executors through the environment: it is shipped with the
            # application (batch/spark/code_shipping.py), as it must be on a real cluster.
            "PYTHONPATH": "",
        })  # fmt: skip
        env.pop("SPARK_CONF_DIR", None)
        return env

    def _launch(self, role: str, args: list[str], cwd: Path, hide: tuple[Path, ...],
                opts: dict[str, str] | None = None) -> Daemon:
        cwd.mkdir(parents=True, exist_ok=True)
        local = cwd / "local"
        local.mkdir(exist_ok=True)
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{role}.log"
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        if hide:
            cmd = ["unshare", "--mount", "--propagation", "private", "--",
                   "sh", "-c", _HIDE_SCRIPT, "sh", str(len(hide)), *map(str, hide), *cmd]
        env = self._env(local)
        env.update(opts or {})
        with log_path.open("ab") as log:
            # start_new_session: the daemon leads its own process group (see stop()).
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        port = int(args[args.index("--port") + 1])
        webui = int(args[args.index("--webui-port") + 1])
        return Daemon(role, proc.pid, port, webui, str(log_path))

    def start(self, timeout_s: float = 90.0) -> ClusterState:
        if (self.directory / STATE_FILE).exists():
            raise ClusterError(f"a cluster is already recorded in {self.directory} (stop it first)")
        for path in self.hide_from_workers:
            if not path.is_dir():
                raise ClusterError(f"cannot hide {path}: not a directory")
            if path == self.directory or self.directory.is_relative_to(path):
                raise ClusterError(f"cannot hide {path}: the cluster directory is inside it")
        self.directory.mkdir(parents=True, exist_ok=True)
        port, webui = free_port(self.host), free_port(self.host)
        state = ClusterState(
            directory=str(self.directory), host=self.host,
            master_url=f"spark://{self.host}:{port}", webui_url=f"http://{self.host}:{webui}",
            worker_cores=self.cores, worker_memory=self.memory,
            hidden_from_workers=[str(p) for p in self.hide_from_workers],
        )  # fmt: skip
        try:
            state.daemons.append(self._launch(
                "master", [MASTER_CLASS, "--host", self.host, "--port", str(port),
                           "--webui-port", str(webui)], self.directory / "master", (),
                # The REST submission server's fixed 6066 would clash with a second cluster.
                {"SPARK_MASTER_OPTS": f"-Dspark.master.rest.port={free_port(self.host)}"}))
            state.save()
            self._wait(state, 0, timeout_s)  # the master answers before workers register
            for n in range(1, self.workers + 1):
                cwd = self.directory / f"worker-{n}"
                state.daemons.append(self._launch(
                    f"worker-{n}",
                    [WORKER_CLASS, "--host", self.host, "--port", str(free_port(self.host)),
                     "--webui-port", str(free_port(self.host)), "--cores", str(self.cores),
                     "--memory", self.memory, "--work-dir", str(cwd / "work"), state.master_url],
                    cwd, self.hide_from_workers))
                state.save()
            self._wait(state, self.workers, timeout_s)
        except BaseException:
            stop(self.directory)
            raise
        return state

    def _wait(self, state: ClusterState, workers: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            dead = [d.role for d in state.daemons if not _alive(d.pid)]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited during start; see {state.directory}/logs")
            try:
                got = len(alive_workers(master_status(state.webui_url)))
                if got >= workers:
                    return
                last = f"{got}/{workers} workers registered"
            except OSError as exc:
                last = f"master web UI not answering ({exc})"
            time.sleep(0.5)
        raise ClusterError(f"cluster not ready after {timeout_s:.0f}s: {last}; see {state.directory}/logs")


def status(directory: Path) -> dict[str, object]:
    """What the master reports (status, alive workers, running applications) plus the pids."""
    state = ClusterState.load(directory.resolve())
    out: dict[str, object] = {
        "master_url": state.master_url, "webui_url": state.webui_url,
        "daemons": {d.role: {"pid": d.pid, "alive": _alive(d.pid)} for d in state.daemons},
    }  # fmt: skip
    try:
        got = master_status(state.webui_url)
        out["status"] = got.get("status")
        out["alive_workers"] = len(alive_workers(got))
        out["cores"] = got.get("cores")
        out["active_apps"] = [a.get("name") for a in got.get("activeapps", [])]  # type: ignore[union-attr]
    except OSError as exc:
        out["status"] = f"unreachable: {exc}"
    return out


def stop(directory: Path, timeout_s: float = 20.0) -> list[str]:
    """SIGTERM every daemon's process group (workers first, so they end their executors),
    SIGKILL what is left after timeout_s; removes the state file. Returns the roles stopped."""
    directory = directory.resolve()
    try:
        state = ClusterState.load(directory)
    except ClusterError:
        return []
    daemons = sorted(state.daemons, key=lambda d: d.role == "master")
    for daemon in daemons:
        try:
            os.killpg(daemon.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(group_pids(d.pid) for d in daemons):
        time.sleep(0.2)
    for daemon in daemons:
        for pid in group_pids(daemon.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (directory / STATE_FILE).unlink(missing_ok=True)
    return [d.role for d in daemons]
