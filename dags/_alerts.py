"""Failure alerts of the recsys DAGs: `on_failure_alert` (every task's on_failure_callback)
builds one alert and delivers it to the sinks named in RECSYS_ALERT_SINKS (default `file`:
one JSON line per alert in RECSYS_ALERT_LOG or AIRFLOW_HOME/alerts.log). A sink is one
function registered with `@alert_sink("name")`.

Import-light like _common.py: the DAG processor imports it on every parse.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("recsys.dags")

AlertSink = Callable[[dict[str, Any]], None]
ALERT_SINKS: dict[str, AlertSink] = {}


def alert_sink(name: str) -> Callable[[AlertSink], AlertSink]:
    """Register a sink under a name usable in RECSYS_ALERT_SINKS (e.g. `file,slack`)."""

    def register(fn: AlertSink) -> AlertSink:
        ALERT_SINKS[name] = fn
        return fn

    return register


def alert_log_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("RECSYS_ALERT_LOG"):
        return Path(env["RECSYS_ALERT_LOG"])
    home = env.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "alerts.log"


@alert_sink("file")
def _file_sink(alert: dict[str, Any]) -> None:
    """One JSON line per alert: greppable, tail-able, and trivially shipped by a log agent."""
    path = alert_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(alert, sort_keys=True) + "\n")


@alert_sink("log")
def _log_sink(alert: dict[str, Any]) -> None:
    log.error("RECSYS ALERT %s", json.dumps(alert, sort_keys=True))


def build_alert(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    logical = context.get("logical_date")
    exc = context.get("exception")
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # log_url reads config; an alert must never fail on it
        log_url = None
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "logical_date": logical.isoformat() if hasattr(logical, "isoformat") else logical,
        "try_number": getattr(ti, "try_number", None),
        "exception": f"{type(exc).__name__}: {exc}" if exc is not None else None,
        "log_url": log_url,
        "alerted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def send_alert(alert: dict[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """Deliver to every sink named in RECSYS_ALERT_SINKS (default `file`). Returns the sinks
    that succeeded. A broken sink is logged, never raised: the callback must not mask the
    task's own failure."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get("RECSYS_ALERT_SINKS", "file").split(",") if n.strip()]
    delivered: list[str] = []
    for name in names:
        sink = ALERT_SINKS.get(name)
        if sink is None:
            log.warning("unknown alert sink %r (known: %s)", name, sorted(ALERT_SINKS))
            continue
        try:
            sink(alert)
            delivered.append(name)
        except Exception:
            log.exception("alert sink %s failed", name)
    return delivered


def on_failure_alert(context: Any) -> None:
    """Task-level on_failure_callback (runs after the last retry has failed)."""
    try:
        send_alert(build_alert(context))
    except Exception:
        log.exception("could not build/send the failure alert")
