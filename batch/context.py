"""What every stage knows: where the data and artifacts are, the run date, the config."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch import stages
from batch.stages import RunOutputs
from batch.stages.outputs import MODEL_VARIANTS, RANKER_VARIANT, VARIANTS, work_dir
from shared import __version__
from shared.config import PipelineConfig

__all__ = ["MODEL_VARIANTS", "RANKER_VARIANT", "VARIANTS", "RunContext", "RunOutputs",
           "code_version", "read_json", "write_json"]


@dataclass(frozen=True)
class RunContext:
    data_dir: Path
    artifacts: Path
    run_date: dt.date
    config: PipelineConfig
    # The stage this context runs (the runner sets it): its reads of other stages' outputs
    # are then checked against its StageSpec.needs. None: unchecked (tests, tools).
    stage: str | None = None

    @property
    def work(self) -> Path:
        return work_dir(self.artifacts, self.run_date.isoformat())

    @property
    def outputs(self) -> RunOutputs:
        """`ctx.outputs.<stage>`: that stage's typed outputs (batch/stages/outputs.py); in a
        stage's context only those of the stages it needs, and its own."""
        return RunOutputs(self.work, self.stage)

    def for_stage(self, name: str) -> RunContext:
        """This context as stage `name` sees it: reads only what its StageSpec needs."""
        stages.get(name)
        return dataclasses.replace(self, stage=name)

    def stage_dir(self, stage: str) -> Path:
        """A stage's output directory: prefer `ctx.outputs.<stage>` and its named files."""
        stages.get(stage)
        if self.stage is not None:
            stages.check_readable(self.stage, stage)
        return self.work / stage

    @property
    def idmap_dir(self) -> Path:
        return self.artifacts / "state" / "idmaps"

    @property
    def run_end_epoch(self) -> int:
        """Events strictly before the end of the run date belong to this run."""
        end = dt.datetime.combine(self.run_date + dt.timedelta(days=1), dt.time(), dt.UTC)
        return int(end.timestamp())

    def path(self, stage: str, name: str) -> str:
        """A file of a stage's outputs by name: prefer `ctx.outputs.<stage>.<output>`."""
        return str(self.stage_dir(stage) / name)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__
