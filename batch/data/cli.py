"""`recsys data ...`: get input data into the data contract (see `batch.data.contract`).

Heavy imports (pandas, pyarrow, numpy) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from shared.cli_errors import RecsysGroup, fail
from shared.errors import RecsysError, UsageError

data_app = typer.Typer(
    cls=RecsysGroup,
    help="Prepare input data in the data contract (interactions/items/users.parquet): "
    "import a MovieLens download or generate synthetic data.",
    no_args_is_help=True,
)


@data_app.command("import-movielens")
def import_movielens_cmd(
    src: Annotated[
        Path,
        typer.Argument(
            help="Unzipped MovieLens directory (ml-latest-small, ml-latest, ml-20m, ml-25m, "
            "ml-100k, ml-1m or ml-10m); the layout is detected from its files.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Data directory to write interactions/items[/users].parquet into."
        ),
    ],
) -> None:
    """Convert a MovieLens download into the data contract (ratings become 'rating' events).
    Exits 4 (DataContractError) when SRC is no MovieLens layout it knows."""
    from batch.data.movielens import import_movielens

    started = time.monotonic()
    try:
        result = import_movielens(src, out)
    except OSError as exc:  # no traceback: a file the user named cannot be read or written
        raise fail(RecsysError(str(exc))) from exc
    typer.echo(f"{result.summary(out)} ({time.monotonic() - started:.1f}s)")


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from exc


@data_app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Data directory to write into.")],
    users: Annotated[int, typer.Option("--users", help="Number of users.", min=1)] = 10_000,
    items: Annotated[int, typer.Option("--items", help="Number of items.", min=1)] = 5_000,
    events: Annotated[
        int, typer.Option("--events", help="Number of interaction rows to write.", min=0)
    ] = 1_000_000,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; same seed and options, same data.")
    ] = 42,
    end_date: Annotated[
        str,
        typer.Option(
            "--end-date",
            help="Last day of the time window (YYYY-MM-DD, UTC); no event is later than its "
            "last second.",
        ),
    ] = "2025-12-31",
    days: Annotated[
        int, typer.Option("--days", help="Length of the time window in days.", min=1)
    ] = 365,
    regions: Annotated[
        int,
        typer.Option(
            "--regions",
            help="Number of regions (US, GB, DE, ...) for users and item availability.",
            min=1,
            max=60,
        ),
    ] = 5,
    bad_share: Annotated[
        float,
        typer.Option(
            "--bad-share",
            help="Share of rows to make malformed (empty ids, future timestamps, duplicates, "
            "unknown items) to exercise the pipeline's quarantine.",
            min=0.0,
            max=0.5,
        ),
    ] = 0.0,
) -> None:
    """Generate realistic synthetic data: Zipf popularity, genre tastes, sessions, regions."""
    from batch.data.generate import GenerateConfig, generate

    cfg = GenerateConfig(
        out_dir=out,
        n_users=users,
        n_items=items,
        n_events=events,
        seed=seed,
        end_date=_parse_date(end_date),
        days=days,
        n_regions=regions,
        bad_share=bad_share,
    )
    started = time.monotonic()
    try:
        result = generate(cfg)
    except ValueError as exc:  # options that contradict each other
        raise fail(UsageError(str(exc))) from exc
    except OSError as exc:
        raise fail(RecsysError(str(exc))) from exc
    typer.echo(f"{result.summary()} ({time.monotonic() - started:.1f}s)")
