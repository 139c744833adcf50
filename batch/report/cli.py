"""`recsys report --artifacts ART --out report.html`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import duckdb
import typer

from shared.errors import RecsysError


def report(
    artifacts: Annotated[Path, typer.Option(help="artifacts directory holding the warehouse")],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
) -> None:
    """Write a self-contained HTML report of the latest run and its trend."""
    from batch.report.build import write_report  # matplotlib only when the command runs

    try:
        path = write_report(artifacts, out)
    except (RecsysError, duckdb.Error) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"report written to {path}")
