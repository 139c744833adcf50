"""`recsys report --artifacts ART --out report.html`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import duckdb
import typer

from shared.cli_errors import fail
from shared.errors import RecsysError


def report(
    artifacts: Annotated[Path, typer.Option(help="artifacts directory holding the warehouse")],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
) -> None:
    """Write a self-contained HTML report of the latest run and its trend."""
    from batch.report.build import write_report  # matplotlib only when the command runs

    try:
        path = write_report(artifacts, out)
    except RecsysError as exc:  # e.g. WarehouseUnavailable (8): nothing published yet
        raise fail(exc) from exc
    except duckdb.Error as exc:
        raise fail(RecsysError(f"the warehouse could not be read: {exc}")) from exc
    typer.echo(f"report written to {path}")
