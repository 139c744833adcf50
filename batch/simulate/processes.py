"""The real components the simulator drives: `recsys batch run` and `recsys serve`."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batch.simulate.client import ServiceClient
from shared.service_process import recsys_command, running_service


def recsys_argv() -> list[str]:
    """`recsys` of this interpreter's environment (the one the simulator runs in)."""
    return recsys_command()


def run_nightly(data: Path, artifacts: Path, run_date: dt.date, config: Path | None,
                log_file: Path) -> float:  # fmt: skip
    """One nightly run (validate .. publish); returns its seconds. Raises with the log's
    tail when it fails, so a broken night stops the simulation instead of skewing it."""
    argv = [*recsys_argv(), "batch", "run", "--data", str(data), "--artifacts", str(artifacts),
            "--run-date", run_date.isoformat()]  # fmt: skip
    if config is not None:
        argv += ["--config", str(config)]
    started = time.monotonic()
    with log_file.open("a") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log_file.read_text().splitlines()[-15:]
        raise RuntimeError(f"nightly run {run_date} failed (rc {done.returncode}):\n" + "\n".join(tail))
    return time.monotonic() - started


@contextmanager
def service(artifacts: Path, port: int, log_file: Path, popular_only: bool = False,
            workers: int = 2) -> Iterator[ServiceClient]:  # fmt: skip
    """A real gunicorn server on the artifacts, stopped with SIGTERM on exit: a clean stop
    writes every buffered served-request and event record to the logs before the night.
    Only the simulator's own settings reach it (shared.service_process cleans RECSYS_*)."""
    env = {"RECSYS_POPULAR_ONLY": "true" if popular_only else "false",
           "RECSYS_RELOAD_POLL_SECONDS": "0"}  # fmt: skip
    with running_service(artifacts, log_file, port=port, workers=workers, env=env,
                         append_log=True) as running:  # fmt: skip
        yield ServiceClient(running.base_url)
