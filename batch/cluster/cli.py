"""`recsys cluster start | status | stop`: a Spark standalone cluster on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shared.cli_errors import RecsysGroup

cluster_app = typer.Typer(cls=RecsysGroup, no_args_is_help=True,
                          help="A Spark standalone cluster on this machine (docs/cluster.md).")

DirOpt = Annotated[Path, typer.Option("--dir", help="the cluster's directory: state, logs, work dirs")]


@cluster_app.command("start")
def start(
    directory: DirOpt = Path(".spark-cluster"),
    workers: Annotated[int, typer.Option(min=1, help="workers to start")] = 2,
    cores: Annotated[int, typer.Option(min=1, help="cores each worker offers")] = 1,
    memory: Annotated[str, typer.Option(help="memory each worker offers its executors")] = "2g",
    host: Annotated[str, typer.Option(help="the address every daemon binds")] = "127.0.0.1",
    hide_from_workers: Annotated[list[Path] | None, typer.Option(
        "--hide-from-workers",
        help="a path the workers must not see (Linux, root; repeatable): proves the driver's "
             "private disk is not relied on")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every worker")] = 90.0,
) -> None:
    """Start a master and the workers, wait until every worker is registered, and print
    the master URL (the last line of the output) for `--spark-master`."""
    from batch.cluster.standalone import StandaloneCluster

    state = StandaloneCluster(directory, workers, cores, memory, host,
                              hide_from_workers=tuple(hide_from_workers or ())).start(timeout)
    typer.echo(f"web UI {state.webui_url}; {workers} workers x {cores} core(s), {memory}", err=True)
    typer.echo(state.master_url)


@cluster_app.command("status")
def status_cmd(directory: DirOpt = Path(".spark-cluster")) -> None:
    """The master's view as JSON: status, alive workers, cores, running applications."""
    from batch.cluster.standalone import status

    typer.echo(json.dumps(status(directory), indent=2))


@cluster_app.command("url")
def url_cmd(directory: DirOpt = Path(".spark-cluster")) -> None:
    """The running cluster's master URL, for `--spark-master $(recsys cluster url)`."""
    from batch.cluster.standalone import ClusterState

    typer.echo(ClusterState.load(directory.resolve()).master_url)


@cluster_app.command("stop")
def stop_cmd(directory: DirOpt = Path(".spark-cluster")) -> None:
    """Stop the workers (and their executors), then the master; nothing is left running."""
    from batch.cluster.standalone import stop

    stopped = stop(directory)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no cluster recorded there")
