"""How every `recsys` command ends on a RecsysError: `error: <message>` on stderr and the
error's exit code from shared/errors.py, never a traceback (those are left to bugs).

`RecsysGroup` does it for every command below a Typer app built with `cls=RecsysGroup`
(the root `recsys` app and the command groups that are also invoked on their own, such as
`recsys batch` by spark_entry.py); `fail(exc)` does it by hand where an error must first be
translated (a DuckDB error into a UsageError, say).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from shared.errors import RecsysError, exit_code_of


def fail(exc: BaseException) -> typer.Exit:
    """Print `error: <exc>` on stderr; return the Exit to raise, with exc's exit code."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exit_code_of(exc))


class RecsysGroup(TyperGroup):
    """A command group whose commands end a RecsysError with fail()."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click.Context (vendored in typer 0.2x)
        try:
            return super().invoke(ctx)
        except RecsysError as exc:
            raise fail(exc) from exc
