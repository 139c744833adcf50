"""What every stage knows: where the data and artifacts are, the run date, the config."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import __version__
from shared.config import PipelineConfig

VARIANTS = ("eval", "full")  # eval: trained on the train split; full: on all data
# The re-ranker learns from one step further back in time: models trained on the eval
# train split minus its own held-out share (`ranker_labels`), so that neither its training
# candidates nor its labels touch the test split the reported metrics use.
RANKER_VARIANT = "ranker"
MODEL_VARIANTS = (RANKER_VARIANT, *VARIANTS)


@dataclass(frozen=True)
class RunContext:
    data_dir: Path
    artifacts: Path
    run_date: dt.date
    config: PipelineConfig

    @property
    def work(self) -> Path:
        return self.artifacts / "work" / self.run_date.isoformat()

    def stage_dir(self, stage: str) -> Path:
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
