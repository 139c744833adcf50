"""`recsys rollout promote` and `recsys rollout check`: the batch side of the rollout group
(shared/rollout_cli.py), attached by batch.cli.register_experiment_report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from shared.bundle import read_current
from shared.config import PipelineConfig, RolloutConfig
from shared.errors import RolloutCheckFailed

Artifacts = Annotated[Path, typer.Option(help="artifacts directory (runs/, CURRENT, experiments.json)")]


def promote(artifacts: Artifacts) -> None:
    """Switch CURRENT to the canary run, stop the rollout, rebuild the warehouse."""
    from batch.rollout.check import promote_running

    found = promote_running(artifacts)
    typer.echo(f"promoted {found.experiment}: CURRENT -> {read_current(artifacts)}")


def _rollout_config(path: Path | None) -> RolloutConfig:
    try:
        return PipelineConfig.load(path).rollout
    except (OSError, ValueError, ValidationError) as exc:  # ValueError: bad JSON
        raise RolloutCheckFailed(f"cannot read the configuration {path}: {exc}") from exc


def check(
    artifacts: Artifacts,
    config: Annotated[Path | None, typer.Option(help="PipelineConfig JSON; its `rollout` section "
                                                "holds the thresholds (default: the defaults)")] = None,
    auto_promote: Annotated[bool, typer.Option(help="promote once the guardrails held for "
                                               "rollout.hold_hours with rollout.min_users per arm")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:  # fmt: skip
    """Compare the canary with control in the (rebuilt) warehouse: error and fallback rate,
    p99 latency, then CTR and play rate (one-sided); a breach stops the canary. Exit 0 when
    the check ran, whatever it decided; 10 when it could not run."""
    from batch.rollout.check import check as run_check

    outcome = run_check(artifacts, _rollout_config(config), auto_promote)
    if as_json:
        typer.echo(json.dumps({"action": outcome.action, "reason": outcome.reason,
                               "experiment": outcome.rollout.experiment if outcome.rollout else None,
                               "run_id": outcome.rollout.run_id if outcome.rollout else None,
                               "values": outcome.values}, default=str))  # fmt: skip
        return
    name = outcome.rollout.experiment if outcome.rollout else "-"
    typer.echo(f"{name}: {outcome.action}: {outcome.reason}")
