"""Pruning old runs never deletes what a server may still serve: CURRENT, or the run a
server recorded as the last it accepted (what a restarting worker falls back to)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from batch.publish.release import list_runs, prune_runs
from shared.bundle import run_dir, write_accepted, write_current
from shared.bundle_layout import MANIFEST
from shared.experiments import EXPERIMENTS_FILE


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


def _experiment(bundle: str, status: str = "running") -> dict[str, object]:
    return {"name": f"canary-{bundle}", "layer": f"l-{bundle}", "salt": bundle,
            "status": status, "arms": [{"name": "control", "share": 0.5},
                                       {"name": "canary", "share": 0.5,
                                        "treatment": {"bundle": bundle}}]}  # fmt: skip


def test_prune_keeps_the_bundles_of_running_experiment_arms(tmp_path: Path) -> None:
    _runs(tmp_path, ["r1", "r2", "r3", "r4"])
    write_current(tmp_path, "r4")
    declared = {"experiments": [_experiment("r2"), _experiment("r3", status="stopped")]}
    (tmp_path / EXPERIMENTS_FILE).write_text(json.dumps(declared))
    assert prune_runs(tmp_path, keep=1) == ["r1", "r3"]
    assert list_runs(tmp_path) == ["r2", "r4"]


def test_prune_deletes_nothing_beside_a_bad_experiments_file(tmp_path: Path) -> None:
    _runs(tmp_path, ["r1", "r2", "r3"])
    write_current(tmp_path, "r3")
    (tmp_path / EXPERIMENTS_FILE).write_text('{"experiments": [{"name": "half-written"')
    assert prune_runs(tmp_path, keep=1) == []
    assert list_runs(tmp_path) == ["r1", "r2", "r3"]
