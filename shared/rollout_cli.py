"""`recsys rollout`: start, show and abort a canary rollout (docs/experiments.md, "Canary
rollouts").

`rollout_app` is the group; `promote` and `check` need the warehouse rebuild and the
statistics of the batch side, which adds them to this group from its entry point
(batch.cli.register_experiment_report, the batch side of experiments), as the experiment
report does for `recsys experiment`. Errors end as `error: <message>` with the error's code:
2 for a usage error (no rollout, a second one), 6 for a run that is not a verified bundle.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from shared import rollout
from shared.bundle import read_current
from shared.cli_errors import RecsysGroup

rollout_app = typer.Typer(
    cls=RecsysGroup,
    help="Canary rollouts: serve a published run to a share of users, check, promote or abort.",
    no_args_is_help=True,
)

Artifacts = Annotated[Path, typer.Option(help="artifacts directory (runs/, CURRENT, experiments.json)")]


@rollout_app.command("start")
def start(
    run_id: Annotated[str, typer.Argument(help="a published run id (ART/runs/RUN_ID)")],
    artifacts: Artifacts,
    share: Annotated[str, typer.Option(help="users served the canary: 5% or 0.05")] = "5%",
) -> None:
    """Verify RUN_ID and serve it to --share of the users as experiment canary-RUN_ID (layer
    `rollout`); the others keep CURRENT. One rollout at a time."""
    started = rollout.start(artifacts, run_id, rollout.parse_share(share))
    typer.echo(f"started {started.experiment}: {started.run_id} serves {started.share:.2%} of "
               f"users, CURRENT {read_current(artifacts)} the rest")  # fmt: skip


@rollout_app.command("status")
def status(artifacts: Artifacts) -> None:
    """Print the running rollout and its last events (exit 0 also when none runs)."""
    found = rollout.current(artifacts)
    events = rollout.read_events(artifacts)
    if found is None:
        typer.echo(f"no rollout running (CURRENT {read_current(artifacts)})")
        if events:
            last = events[-1]
            typer.echo(f"last: {last['ts']} {last['experiment']} {last['action']}: {last['reason']}")
        return
    since = rollout.started_at(artifacts, found)
    age = ("" if since is None else
           f", running since {since.isoformat()} ({(dt.datetime.now(dt.UTC) - since).total_seconds() / 3600:.1f} h)")  # fmt: skip
    typer.echo(f"{found.experiment}: canary {found.run_id} at {found.share:.2%} vs CURRENT "
               f"{read_current(artifacts)}{age}")  # fmt: skip
    for entry in [e for e in events if e["experiment"] == found.experiment][-5:]:
        typer.echo(f"    {entry['ts']} {entry['action']}: {entry['reason']}")


@rollout_app.command("abort")
def abort(
    artifacts: Artifacts,
    reason: Annotated[str, typer.Option(help="why, for the audit line and the history")],
) -> None:
    """Stop the running rollout: its users are served CURRENT again at the service's next poll."""
    with rollout.lock(artifacts):
        found = rollout.require(artifacts)
        rollout.stop(artifacts, found, "aborted", reason)
    typer.echo(f"aborted {found.experiment}: {reason}; CURRENT {read_current(artifacts)} serves everyone")


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")
