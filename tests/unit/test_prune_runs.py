"""Pruning old runs never deletes what a server may still serve: CURRENT, or the run a
server recorded as the last it accepted (what a restarting worker falls back to)."""

from __future__ import annotations

import os
from pathlib import Path

from batch.publish.release import list_runs, prune_runs
from shared.bundle import run_dir, write_accepted, write_current
from shared.bundle_layout import MANIFEST


def _runs(artifacts: Path, names: list[str]) -> None:
    for age, name in enumerate(names):
        path = run_dir(artifacts, name)
        path.mkdir(parents=True)
        (path / MANIFEST).write_text("{}")
        os.utime(path / MANIFEST, (1_000_000 + age, 1_000_000 + age))  # oldest first


def test_prune_keeps_the_newest_current_and_every_servers_accepted_run(tmp_path: Path) -> None:
    _runs(tmp_path, ["r1", "r2", "r3", "r4", "r5"])
    write_current(tmp_path, "r5")  # refused by the servers...
    write_accepted(tmp_path, "host-a-8000", "r2")  # ...which still serve these
    write_accepted(tmp_path, "host-b-8000", "r3")
    removed = prune_runs(tmp_path, keep=1)
    assert removed == ["r1", "r4"]
    assert list_runs(tmp_path) == ["r2", "r3", "r5"]
