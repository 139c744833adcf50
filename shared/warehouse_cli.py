"""`recsys sql`: read-only SQL over the warehouse, printed as a table, CSV or JSON; and
`recsys warehouse vacuum`, its maintenance.

By default `sql` opens the analysts' file (pseudonymous `user_key`, no raw ids);
`--restricted` opens the raw one. `--query NAME [--param k=v ...]` runs a canned analysis
from shared/queries/ (`--list-queries` lists them). A query the warehouse refuses is a
UsageError (exit 2); a missing or busy warehouse a WarehouseUnavailable (exit 8).
"""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer

from shared import canned_queries
from shared.cli_errors import RecsysGroup, fail
from shared.errors import UsageError, WarehouseUnavailable
from shared.warehouse import run_query, vacuum


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _print_table(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    typer.echo(line)
    typer.echo("-+-".join("-" * w for w in widths))
    for row in cells:
        typer.echo(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    typer.echo(f"({len(rows)} rows)")


def _list_queries() -> None:
    for q in canned_queries.load_all().values():
        typer.echo(f"{q.name} (v{q.version}): {q.description}")
        for p in q.params:
            default = "required" if p.required else f"default {p.default or 'NULL'}"
            typer.echo(f"    --param {p.name}=...  ({default}) {p.description}")


def _parse_params(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param wants key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def sql(
    query: Annotated[str | None, typer.Argument(help="SQL to run (read-only)")] = None,
    artifacts: Annotated[
        Path | None, typer.Option(help="artifacts directory holding the warehouse files")
    ] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="output format")] = (
        OutputFormat.table
    ),
    canned: Annotated[
        str | None, typer.Option("--query", help="run a canned analysis by name")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="canned query parameter key=value")
    ] = None,
    list_queries: Annotated[
        bool, typer.Option("--list-queries", help="list the canned analyses and exit")
    ] = False,
    restricted: Annotated[
        bool,
        typer.Option("--restricted", help="use the raw warehouse (original user ids)"),
    ] = False,
) -> None:
    """Run a read-only SQL query (or a canned analysis) against the analysts' warehouse."""
    if list_queries:
        _list_queries()
        return
    if artifacts is None:
        raise UsageError("--artifacts is required")
    if (query is None) == (canned is None):
        raise UsageError("give either a SQL string or --query NAME (not both)")
    params: dict[str, Any] | None = None
    if canned is not None:
        chosen = canned_queries.get(canned)
        text: str = chosen.sql
        params = chosen.bind(_parse_params(param or []))
    else:
        if param:
            raise UsageError("--param only applies to --query")
        text = str(query)
    try:
        columns, rows = run_query(artifacts, text, params, restricted=restricted)
    except duckdb.IOException as exc:  # another process holds the file
        raise fail(WarehouseUnavailable(str(exc))) from exc
    except duckdb.Error as exc:  # the query: a write, a forbidden column or file, a typo
        raise fail(UsageError(str(exc))) from exc
    if format is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")  # shell-friendly, no \r
        writer.writerow(columns)
        writer.writerows(rows)
    elif format is OutputFormat.json:
        typer.echo(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
    else:
        _print_table(columns, rows)


warehouse_app = typer.Typer(
    cls=RecsysGroup, help="Maintenance of the DuckDB warehouse files.", no_args_is_help=True
)


@warehouse_app.command("vacuum")
def vacuum_cmd(
    artifacts: Annotated[Path, typer.Option(help="artifacts directory holding the warehouse files")],
) -> None:
    """VACUUM and CHECKPOINT the warehouse files (exit 8 when missing or held by another process)."""
    for line in vacuum(artifacts.resolve()):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.add_typer(warehouse_app, name="warehouse")
