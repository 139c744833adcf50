"""`recsys experiment report NAME --artifacts ART`: one experiment's report from the warehouse.

Attached to the `recsys experiment` group by batch.cli.register_experiment_report. The
declared shares come from ART/experiments.json unless --share gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import duckdb
import typer

from shared.cli_errors import fail
from shared.errors import RecsysError


def parse_shares(values: list[str] | None) -> dict[str, float] | None:
    """["control=50", "treatment=50"] -> {"control": 50.0, "treatment": 50.0}."""
    if not values:
        return None
    out: dict[str, float] = {}
    for value in values:
        arm, sep, share = value.partition("=")
        try:
            number = float(share)
        except ValueError:
            number = -1.0
        if not sep or not arm or number <= 0:
            raise typer.BadParameter(f"{value!r}: use ARM=SHARE with SHARE > 0", param_hint="--share")
        out[arm] = number
    return out


def declared_shares(artifacts: Path, name: str) -> dict[str, float] | None:
    """The arms' shares as ART/experiments.json declares them (None: not declared there,
    or no valid file: the report then assumes equal shares and says so)."""
    from shared.experiments import load

    try:
        declared = load(artifacts)
    except RecsysError:
        return None
    for experiment in declared.experiments if declared else []:
        if experiment.name == name:
            return {arm.name: arm.share for arm in experiment.arms}
    return None


def report(
    name: Annotated[str, typer.Argument(help="the experiment, as `assignments.experiment` names it")],
    artifacts_dir: Annotated[Path, typer.Option("--artifacts", help="artifacts directory holding the warehouse")],
    out: Annotated[Path, typer.Option(help="JSON report; the .md and .png are written beside it")] = Path("experiment.json"),
    share: Annotated[list[str] | None, typer.Option(help="declared share ARM=SHARE, repeatable (default: ART/experiments.json, else equal)")] = None,
    control: Annotated[str | None, typer.Option(help="the control arm (default: 'control', else the first arm)")] = None,
    mde: Annotated[float, typer.Option(min=0.001, help="relative effect the sample size is computed for")] = 0.05,
    restricted: Annotated[bool, typer.Option(help="read the restricted warehouse (user_id) instead of the analysts'")] = False,
) -> None:  # fmt: skip
    """Per-arm CTR and play rate with the user as the unit, lift and p-values, the
    sample-ratio check, the power calculation and guardrails (docs/experiments-analysis.md)."""
    from batch.experiments.report import experiment_report, write_report
    from shared.warehouse import connect

    shares = parse_shares(share) or declared_shares(artifacts_dir, name)
    try:
        con = connect(artifacts_dir, restricted)
        try:
            result = experiment_report(con, name, shares, control, relative_mde=mde)
        finally:
            con.close()
    except RecsysError as exc:  # WarehouseUnavailable (8), an unknown experiment (2), ...
        raise fail(exc) from exc
    except duckdb.Error as exc:
        raise fail(RecsysError(f"the warehouse could not be read: {exc}")) from exc
    paths = write_report(result, out)
    for warning in result.warnings():
        typer.echo(f"warning: {warning}", err=True)
    for arm in result.stats.arms:
        ctr = arm.metrics["ctr"]
        lift = "" if arm.vs_control is None else (
            f" lift {100 * arm.vs_control['ctr'].lift:+.2f}% (p = {arm.vs_control['ctr'].p_value:.3g})")
        typer.echo(f"{arm.arm:<12} users {arm.users:>8,}  CTR {ctr.value:.4f}{lift}")
    typer.echo("report: " + ", ".join(map(str, paths)))
