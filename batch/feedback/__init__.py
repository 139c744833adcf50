"""The service's feedback event log in the nightly run: which files, and what each type is.

Pure Python (no Spark): the mapping and the partition choice are unit-tested here, and
batch/spark/events.py turns them into column expressions.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from shared.config import EventsConfig
from shared.errors import DataContractError
from shared.events import DISLIKE, EVENT_LOG_DIR, IMPRESSION

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# Event types kept beside the interactions, for what they are: an impression is the
# ranker's would-be negative, a dislike removes the item from the user's lists.
FEEDBACK_TYPES = (IMPRESSION, DISLIKE)


@dataclass(frozen=True)
class TypeWeights:
    """events.type_weights split by what each type becomes."""

    fixed: dict[str, float]  # type -> its weight as an interaction
    from_value: frozenset[str]  # types whose weight is the event's value (ratings)
    feedback: frozenset[str]  # not interactions: impression, dislike (and any other None)

    @classmethod
    def of(cls, type_weights: dict[str, float | str | None]) -> TypeWeights:
        fixed: dict[str, float] = {}
        from_value: set[str] = set()
        feedback: set[str] = set()
        for name, weight in type_weights.items():
            if weight is None:
                feedback.add(name)
            elif weight == "value":
                from_value.add(name)
            else:
                fixed[name] = float(weight)
        return cls(fixed, frozenset(from_value), frozenset(feedback))

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.fixed) | self.from_value | self.feedback

    def weight(self, event_type: str, value: float | None) -> float | None:
        """The interaction weight of one event; None when it is no interaction (or a
        'value' type without a value: the reader quarantines that one)."""
        if event_type in self.fixed:
            return self.fixed[event_type]
        if event_type in self.from_value:
            return value
        return None


def log_dir(config: EventsConfig, artifacts: Path) -> Path:
    return Path(config.path) if config.path else artifacts / EVENT_LOG_DIR


def is_enabled(config: EventsConfig, artifacts: Path) -> bool:
    """enabled None: on when the event log's directory exists (a platform without the
    service's feedback runs as before); True with no directory is a configuration error."""
    path = log_dir(config, artifacts)
    if config.enabled is None:
        return path.is_dir()
    if config.enabled and not path.is_dir():
        raise DataContractError(f"events.enabled is true but there is no event log at {path}")
    return config.enabled


def partitions(root: Path, run_date: dt.date, window_days: int) -> list[Path]:
    """The `date=YYYY-MM-DD` directories of the run date and the window_days - 1 before it,
    in date order. Later days belong to later runs (a rerun of an old date reads what that
    night would have read); a directory not named like a partition is not the log's."""
    first = run_date - dt.timedelta(days=window_days - 1)
    chosen: list[tuple[dt.date, Path]] = []
    for child in root.iterdir() if root.is_dir() else ():
        m = _PARTITION.match(child.name)
        if not (m and child.is_dir()):
            continue
        try:
            day = dt.date.fromisoformat(m.group(1))
        except ValueError:
            continue
        if first <= day <= run_date:
            chosen.append((day, child))
    return [p for _, p in sorted(chosen)]


def part_files(dirs: list[Path]) -> list[Path]:
    """The complete Parquet files of these partitions, in name order: `part-*.parquet`, as
    the warehouse reads them (the writers write a hidden `.tmp-*` name first, then link it
    into place, so a half-written file is never one of these)."""
    return [f for d in dirs for f in sorted(d.glob("part-*.parquet"))]
