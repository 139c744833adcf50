"""gunicorn settings and hooks: `gunicorn -c python:online.gunicorn_conf`.

The master only reads this module and the RECSYS_* env; it never imports FAISS, ONNX
Runtime or prometheus_client (see PITFALLS, Serving). Each worker builds the app after the
fork, sets one OpenMP thread, and loads its bundle before it accepts a connection.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from online.config import ServiceConfig, describe_error
from online.jsonlog import logging_config

# One OpenMP thread per worker: workers x threads must not exceed the cores. Set before any
# worker can load an OpenMP runtime (inherited through fork).
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    _cfg = ServiceConfig.from_env()
except ValidationError as exc:  # started as plain `gunicorn -c ...` without RECSYS_* set
    raise SystemExit(f"recsys: invalid settings: {describe_error(exc)}") from None
if _cfg.runtime_dir is None:
    os.environ["RECSYS_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="recsys-serve-")
_runtime = Path(os.environ["RECSYS_RUNTIME_DIR"])
# prometheus_client reads this when first imported, which happens only in the workers.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_runtime / "prometheus"))
# The *_created series double the scrape size and say nothing a restart counter does not.
os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

wsgi_app = "online.app:create_app()"
bind = f"{_cfg.host}:{_cfg.port}"
workers = _cfg.workers
# gthread keeps connections alive between requests; threads=1 keeps one request per core.
# RecsysWorker is gthread that reads each request (under a deadline) on its own pool of
# read_threads before the request may take one of the `threads`, and answers gunicorn's
# own refusals (414, 431, 400...) in JSON: online/gworker.py.
worker_class = "online.gworker.RecsysWorker"
threads = _cfg.threads
# gunicorn's defaults, named because the JSON errors and docs/service.md quote them.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
keepalive = 5
# The bundle load in post_worker_init runs before the worker's first heartbeat, which is
# when gunicorn starts this clock: a short timeout does not cut a load (docs/service.md).
timeout = _cfg.worker_timeout
graceful_timeout = 20
preload_app = False  # forking after FAISS/ORT is loaded hangs workers (PITFALLS)
accesslog = None  # the metrics carry per-endpoint latency; access lines cost throughput
logconfig_dict = logging_config(_cfg.log_level)
proc_name = "recsys-serve"
# Per-server control socket, so several servers (tests, benchmarks) never share one path.
control_socket = str(_runtime / "gunicorn.ctl")


def on_starting(server: Any) -> None:
    """Wipe the multiprocess metric files of any previous server using this directory."""
    prom = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True, exist_ok=True)


def post_fork(server: Any, worker: Any) -> None:
    import faiss

    faiss.omp_set_num_threads(1)


def post_worker_init(worker: Any) -> None:
    """Load the bundle now so the worker's first request does not pay for it."""
    app = worker.wsgi
    service = getattr(app, "extensions", {}).get("recsys")
    if service is not None:
        service.store.ensure_started()


def worker_exit(server: Any, worker: Any) -> None:
    """Write this worker's buffered logs as Parquet and close its store before it goes."""
    service = getattr(worker.wsgi, "extensions", {}).get("recsys")
    if service is not None:
        service.close()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
