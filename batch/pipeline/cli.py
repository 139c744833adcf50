"""`recsys batch run | stage | rollback | prune`.

A RecsysError ends a command with `error: <message>` and its exit code (RecsysGroup,
shared/errors.py): a run the quality gate refuses exits 3, whether `run` or `stage gate`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer

from batch import stages
from shared.cli_errors import RecsysGroup
from shared.config import PipelineConfig

batch_app = typer.Typer(cls=RecsysGroup, help="The nightly batch pipeline.", no_args_is_help=True)
log = logging.getLogger(__name__)

DataOpt = Annotated[Path, typer.Option("--data", help="input directory (the data contract)")]
ArtOpt = Annotated[Path, typer.Option("--artifacts", help="artifacts directory (runs, CURRENT, warehouse)")]
DateOpt = Annotated[
    str | None,
    typer.Option("--run-date", help="YYYY-MM-DD; events before the end of this day are used (default: today, UTC)"),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="JSON file overriding PipelineConfig")]
MasterOpt = Annotated[str | None, typer.Option("--spark-master", help="Spark master URL (default local[*])")]


def _context(data: Path, artifacts: Path, run_date: str | None, config: Path | None, master: str | None):  # type: ignore[no-untyped-def]
    from batch.context import RunContext

    date = dt.date.fromisoformat(run_date) if run_date else dt.datetime.now(dt.UTC).date()
    cfg = PipelineConfig.load(config, spark_master=master)
    artifacts.mkdir(parents=True, exist_ok=True)
    return RunContext(data_dir=data.resolve(), artifacts=artifacts.resolve(), run_date=date, config=cfg)


@batch_app.command("run")
def run(data: DataOpt, artifacts: ArtOpt, run_date: DateOpt = None, config: ConfigOpt = None,
        spark_master: MasterOpt = None) -> None:
    """Run every stage: validate .. publish. Exits non-zero (reason printed) when a stage fails."""
    from batch.pipeline.runner import PipelineRunner, summary_line

    runner = PipelineRunner(_context(data, artifacts, run_date, config, spark_master))
    typer.echo(summary_line(runner.run_all()))


# Paragraphs are single lines: the help formatter keeps line breaks inside a paragraph.
STAGE_HELP = (
    "Run one stage alone (what each Airflow task does).\n\n"
    "It reads the outputs of the stages it needs from ART/work/<run-date>/ and overwrites "
    "its own (docs/stages.md). In parentheses, how it runs: session = with a SparkSession, "
    "submit = spark-submitted without one, driver = plain Python. The stages, in order:\n\n"
    + stages.overview()
)


@batch_app.command("stage", help=STAGE_HELP)
def stage(name: Annotated[str, typer.Argument(help=f"the stage to run: {stages.describe()}",
                                              show_default=False)],
          data: DataOpt, artifacts: ArtOpt, run_date: DateOpt = None, config: ConfigOpt = None,
          spark_master: MasterOpt = None) -> None:
    from batch.pipeline.runner import PipelineRunner

    stages.get(name)  # an unknown name is a usage error, before any work
    runner = PipelineRunner(_context(data, artifacts, run_date, config, spark_master))
    try:
        runner.run_stage(name)
    finally:
        runner.close()


@batch_app.command("rollback")
def rollback_cmd(artifacts: ArtOpt,
                 to: Annotated[str | None, typer.Option("--to", help="run id (default: the previous run)")] = None) -> None:
    """Point CURRENT back at an earlier published run."""
    from batch.publish.release import rollback

    typer.echo(f"CURRENT -> {rollback(artifacts.resolve(), to)}")


@batch_app.command("prune")
def prune_cmd(artifacts: ArtOpt,
              keep: Annotated[int, typer.Option(help="published runs to keep")] = 5,
              work_retention_days: Annotated[int, typer.Option(help="delete work/<date> older than this")] = 14,
              served_log_retention_days: Annotated[int, typer.Option(help="delete served_log/date=... older than this")] = 90) -> None:
    """Delete old runs (never CURRENT), old per-date work directories and old served-request logs."""
    from batch.publish.release import prune_runs, prune_work
    from shared.request_log import log_dir
    from shared.request_log import prune as prune_served_log

    removed = prune_runs(artifacts.resolve(), keep)
    removed_work = prune_work(artifacts.resolve(), work_retention_days)
    removed_logs = prune_served_log(log_dir(artifacts.resolve()), served_log_retention_days)
    typer.echo(f"removed runs: {removed}; removed work dirs: {removed_work}; "
               f"removed served-log days: {removed_logs}")
