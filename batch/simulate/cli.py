"""`recsys simulate`: the traffic simulator's command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer


def simulate(
    work_dir: Annotated[Path, typer.Option("--work-dir", help="data, artifacts and logs go here")] = Path("/tmp/recsys-simulate"),
    days: Annotated[int, typer.Option(min=1, help="simulated days (a nightly run after each)")] = 3,
    users: Annotated[int, typer.Option(min=10, help="users in the generated world")] = 1500,
    items: Annotated[int, typer.Option(min=10, help="items in the catalogue")] = 800,
    events: Annotated[int, typer.Option(min=100, help="base interactions before day 1")] = 40_000,
    users_per_day: Annotated[int, typer.Option(min=1, help="users who visit each day")] = 400,
    seed: Annotated[int, typer.Option(help="one seed for the world and the users' draws")] = 11,
    policy: Annotated[list[str] | None, typer.Option(help="default | popular (repeatable)")] = None,
    pipeline_config: Annotated[Path | None, typer.Option("--pipeline-config", help="`recsys batch run --config` file for every night")] = None,
    port: Annotated[int, typer.Option(help="port of the simulated service")] = 18_550,
    out: Annotated[Path | None, typer.Option(help="report JSON (a PNG is written beside it)")] = None,
) -> None:  # fmt: skip
    """Play synthetic users with known tastes against a real service for N days, with the
    nightly run between days, and report CTR and play rate per day and policy (docs/simulator.md)."""
    from batch.simulate.loop import SimConfig, run_simulation, write_report

    policies = tuple(policy or ["default", "popular"])
    bad = sorted(set(policies) - {"default", "popular"})
    if bad:
        raise typer.BadParameter(f"unknown policy {bad}; use default or popular", param_hint="--policy")
    cfg = SimConfig(work_dir=work_dir, users=users, items=items, events=events, seed=seed, days=days,
                    users_per_day=users_per_day, port=port, policies=policies,  # type: ignore[arg-type]
                    pipeline_config=pipeline_config)  # fmt: skip
    results = run_simulation(cfg)
    out = out or work_dir / f"simulate-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    write_report(results, cfg, out)
    typer.echo(f"{'policy':<8} {'day':>3} {'requests':>8} {'CTR':>7} {'expected':>8} {'play':>7} {'wh CTR':>7}")
    for result in results:
        for row in result.rows():
            typer.echo(f"{row['policy']:<8} {row['day']:>3} {row['requests']:>8} {row['ctr']:>7.4f} "
                       f"{row['expected_ctr']:>8.4f} {row['play_rate']:>7.4f} "
                       f"{row['warehouse_ctr'] if row['warehouse_ctr'] is not None else float('nan'):>7.4f}")  # fmt: skip
    typer.echo(f"report: {out} (chart {out.with_suffix('.png')})")
