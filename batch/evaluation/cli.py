"""`recsys evaluate-holdout`: the command around batch/evaluation/holdout.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def evaluate_holdout(
    data: Annotated[Path, typer.Option("--data", help="a data directory (the contract) or a "
                                       "MovieLens download (imported first)")],
    out: Annotated[Path, typer.Option("--out", help="results directory: <name>.json, <name>.md")],
    work: Annotated[Path, typer.Option("--work", help="scratch directory: the training data, "
                                       "the run's artifacts (overwritten)")],
    protocol: Annotated[str, typer.Option(help="random | temporal (per user)")] = "random",
    share: Annotated[float, typer.Option(help="share of each user's interactions held out")] = 0.25,
    seed: Annotated[int, typer.Option(help="seed of the random split")] = 42,
    config: Annotated[Path | None, typer.Option("--config", help="JSON file overriding "
                                                "PipelineConfig for the run")] = None,
    name: Annotated[str | None, typer.Option(help="result name (default: protocol-config)")] = None,
    ease_max_items: Annotated[int, typer.Option(help="EASE baseline: most items covered")] = 20_000,
    ease_min_count: Annotated[int, typer.Option(help="EASE baseline: least interactions of "
                                                "an item covered")] = 5,
    skip_pipeline: Annotated[bool, typer.Option(help="score the run already in --work")] = False,
) -> None:
    """Split a data set per user, run the pipeline on the training part, score the lists it
    would publish, its sources, its fused order, popularity and EASE on the held-out part."""
    from batch.evaluation import split
    from batch.evaluation.holdout import HoldoutSettings, markdown
    from batch.evaluation.holdout import evaluate_holdout as run
    from shared.errors import UsageError

    if protocol not in split.PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(split.PROTOCOLS)}")
    if not 0.0 < share < 1.0:
        raise UsageError("--share must be between 0 and 1")
    report = run(HoldoutSettings(
        data=data, out=out, work=work, protocol=protocol, share=share, seed=seed,
        config=config, name=name, ease_max_items=ease_max_items, ease_min_count=ease_min_count,
        run_pipeline=not skip_pipeline))
    typer.echo(markdown(report))
