"""`recsys serve`: validate the settings, then exec gunicorn with them in RECSYS_* env.

Exec (rather than running gunicorn inside this process) guarantees that
PROMETHEUS_MULTIPROC_DIR and OMP_NUM_THREADS are set before the server's Python starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import typer
from pydantic import ValidationError

from online.config import ServiceConfig, describe_error
from online.replicas.cli import register as register_replicas
from shared.errors import UsageError

_defaults = ServiceConfig.model_fields


def _help(name: str, text: str) -> str:
    default = _defaults[name].default
    return f"{text} (env RECSYS_{name.upper()}, default {default})"


def register(app: typer.Typer) -> None:
    # `recsys replicas` rides on this entry point: it is the service's, run N times.
    register_replicas(app)

    @app.command("serve")
    def serve(
        artifacts: Path | None = typer.Option(
            None, "--artifacts", help="artifact root with CURRENT and runs/ (env RECSYS_ARTIFACTS)"
        ),
        host: str | None = typer.Option(None, help=_help("host", "bind address")),
        port: int | None = typer.Option(None, help=_help("port", "TCP port")),
        workers: int | None = typer.Option(None, help=_help("workers", "gunicorn workers")),
        threads: int | None = typer.Option(None, help=_help("threads", "threads per worker")),
        budget_ms: float | None = typer.Option(
            None, "--budget-ms", help=_help("budget_ms", "latency budget per request, ms")
        ),
        admin_token: str | None = typer.Option(
            None, "--admin-token", help="token for POST /admin/reload (env RECSYS_ADMIN_TOKEN)"
        ),
        reload_poll_seconds: float | None = typer.Option(
            None,
            "--reload-poll-seconds",
            help=_help("reload_poll_seconds", "poll CURRENT every N s, 0 = off"),
        ),
        log_level: str | None = typer.Option(None, help=_help("log_level", "log level")),
    ) -> None:
        """Serve recommendations over HTTP (gunicorn, one bundle per worker, hot reload)."""
        try:
            config = ServiceConfig.from_env(
                artifacts=artifacts,
                host=host,
                port=port,
                workers=workers,
                threads=threads,
                budget_ms=budget_ms,
                admin_token=admin_token,
                reload_poll_seconds=reload_poll_seconds,
                log_level=log_level,
            )
        except ValidationError as exc:
            typer.echo(f"error: invalid settings: {describe_error(exc)}", err=True)
            raise typer.Exit(UsageError.exit_code) from None
        if not config.artifacts.is_dir():
            typer.echo(f"error: --artifacts {config.artifacts} is not a directory", err=True)
            raise typer.Exit(UsageError.exit_code)
        if not (config.artifacts / "CURRENT").exists():
            typer.echo(
                f"warning: {config.artifacts}/CURRENT missing; /readyz answers 503 "
                "until a bundle is published",
                err=True,
            )
        if not config.admin_token:
            typer.echo("warning: no admin token; POST /admin/reload is disabled", err=True)
        runtime = config.runtime_dir or Path(tempfile.mkdtemp(prefix="recsys-serve-"))
        env = dict(os.environ) | config.model_copy(update={"runtime_dir": runtime}).to_env()
        prom = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(runtime / "prometheus")))
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        env.setdefault("OMP_NUM_THREADS", "1")
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:online.gunicorn_conf"]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(sys.executable, argv, env)
