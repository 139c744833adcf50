"""`recsys experiment`: validate, set, show and try out the experiments file (docs/experiments.md).

`experiment_app` is the group; another module adds its own subcommands to it (the report:
`experiment_app.command("report")(fn)` from its `recsys.commands` entry point, which runs
after `register` here), so the group stays one place for everything about experiments.
Errors end as `error: <message naming the field>` with exit code 2 (ExperimentsError).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shared import experiments as exp
from shared.cli_errors import RecsysGroup
from shared.errors import ExperimentsError

experiment_app = typer.Typer(
    cls=RecsysGroup,
    help="A/B experiments: declare arms (ART/experiments.json), check who gets which.",
    no_args_is_help=True,
)

Artifacts = Annotated[Path, typer.Option(help="artifacts directory holding experiments.json")]


def _describe(file: exp.ExperimentsFile) -> None:
    typer.echo(f"version {file.version}: {len(file.running)} running, "
               f"{len(file.experiments) - len(file.running)} stopped")  # fmt: skip
    for e in file.experiments:
        typer.echo(f"{e.name} (layer {e.layer}, {e.status}, salt {e.salt})")
        for arm in e.arms:
            settings = json.dumps(arm.treatment.settings) if arm.treatment.settings else "control"
            typer.echo(f"    {arm.name:<16} {arm.share:>7.2%}  {settings}")


@experiment_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="experiments JSON file to check")],
    artifacts: Annotated[
        Path | None, typer.Option(help="also check that arms' bundles are published here")
    ] = None,
) -> None:
    """Check an experiments file (exit 2 naming the first bad field); write nothing."""
    parsed = exp.read_file(file)
    if artifacts is not None:
        exp.check_bundles(parsed, artifacts)
    typer.echo(f"ok: {file}")
    _describe(parsed)


@experiment_app.command("set")
def set_cmd(
    file: Annotated[Path, typer.Argument(help="experiments JSON file to install")],
    artifacts: Artifacts,
) -> None:
    """Validate FILE, then install it as ART/experiments.json (atomically, version + 1, one
    audit line in ART/experiments_audit.jsonl); running services pick it up at their poll."""
    parsed = exp.read_file(file)
    exp.check_bundles(parsed, artifacts)
    written = exp.write(artifacts, parsed)
    typer.echo(f"wrote {exp.experiments_path(artifacts)} version {written.version}")


def _installed(artifacts: Path) -> exp.ExperimentsFile:
    found = exp.load(artifacts)
    if found is None:
        raise ExperimentsError(f"no experiments file: {exp.experiments_path(artifacts)} is missing")
    return found


@experiment_app.command("show")
def show(artifacts: Artifacts) -> None:
    """Print the installed experiments and their arms."""
    _describe(_installed(artifacts))


@experiment_app.command("assign")
def assign_cmd(
    user_id: Annotated[str, typer.Argument(help="user id (or assignment id) to place")],
    artifacts: Artifacts,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the arm USER_ID gets in every running experiment (what the service applies)."""
    found = exp.assign(_installed(artifacts), user_id)
    if as_json:
        typer.echo(json.dumps([{"experiment": a.experiment, "arm": a.arm,
                                "treatment": a.treatment.settings} for a in found]))  # fmt: skip
        return
    if not found:
        typer.echo("no running experiment")
    for a in found:
        settings = json.dumps(a.treatment.settings) if a.treatment.settings else "control"
        typer.echo(f"{a.experiment}: {a.arm}  {settings}")


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
