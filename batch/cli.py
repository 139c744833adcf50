"""Batch-side CLI commands: `recsys data ...` and `recsys batch ...`.

Heavy imports (pyspark, faiss, torch) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import typer


def register_data(app: typer.Typer) -> None:
    from batch.data.cli import data_app

    app.add_typer(data_app, name="data")


def register_batch(app: typer.Typer) -> None:
    from batch.pipeline.cli import batch_app

    app.add_typer(batch_app, name="batch")
    # Next to the batch commands: it runs the pipeline on a split of the data.
    from batch.evaluation.cli import evaluate_holdout

    app.command("evaluate-holdout")(evaluate_holdout)
    # The cluster the batch commands can run on (`--spark-master`); no entry point of its
    # own, so an existing install gets it without reinstalling.
    from batch.cluster.cli import cluster_app

    app.add_typer(cluster_app, name="cluster")


def register_report(app: typer.Typer) -> None:
    from batch.report.cli import report

    app.command("report")(report)


def register_simulate(app: typer.Typer) -> None:
    from batch.simulate.cli import simulate

    app.command("simulate")(simulate)


def register_experiment_report(app: typer.Typer) -> None:
    # The group itself is shared's (recsys experiment validate/set/show/assign); the report
    # needs scipy and statsmodels, which only the batch install has.
    from batch.experiments.cli import report
    from shared.experiments_cli import experiment_app

    experiment_app.command("report")(report)
    # The batch side of experiments also carries the rollout's: `promote` rebuilds the
    # warehouse and `check` runs the statistics (shared has start/status/abort).
    from batch.rollout.cli import check, promote
    from shared.rollout_cli import rollout_app

    rollout_app.command("promote")(promote)
    rollout_app.command("check")(check)
