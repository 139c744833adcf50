"""Experiments on the real server (`recsys serve`, 2 gunicorn workers): a user keeps their arm
whichever worker answers and across a restart, and a new experiments file set with the CLI
reaches every worker at its poll."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from shared import experiments as exp
from shared.request_log import log_dir, part_files
from tests.e2e.test_service_e2e import running_server
from tests.online.bundle_factory import build_bundle

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
USERS = [f"u{n}" for n in range(40)]
# The server's workers import this checkout, whatever the venv's editable install points at.
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def recsys_experiment(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "shared.cli", "experiment", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def declare(art: Path, tmp: Path, status: str = "running") -> None:
    spec = tmp / f"experiments-{status}.json"
    spec.write_text(json.dumps({"version": 0, "experiments": [{
        "name": "scoring", "layer": "ranking", "salt": "scoring-e2e", "status": status,
        "arms": [{"name": "control", "share": 0.5},
                 {"name": "noscore", "share": 0.5, "treatment": {"scorer": "none"}}],
    }]}))  # fmt: skip
    recsys_experiment("set", str(spec), "--artifacts", str(art))


def arms_served(base: str, rounds: int) -> dict[str, set[tuple[str | None, str]]]:
    """user -> every (arm, served_by) answered; a fresh connection per request, so both
    workers answer."""
    seen: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
    for n in range(rounds):
        for user in USERS:
            resp = requests.post(f"{base}/v1/recommendations", timeout=10,
                                 json={"user_id": user, "k": 5},
                                 headers={"X-Request-Id": f"{user}-{n}-{time.time_ns()}"})
            assert resp.status_code == 200, resp.text
            seen[user].add((resp.json()["arm"], resp.json()["served_by"]))
    return seen


def test_sticky_across_workers_and_restarts(tmp_path: Path) -> None:
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=41)
    declare(art, tmp_path)
    expected = {u: exp.assign(exp.load(art), u)[0].arm for u in USERS}
    assert set(expected.values()) == {"control", "noscore"}

    with running_server(art, tmp_path / "first.log", **ENV) as base:
        first = arms_served(base, rounds=3)
    with running_server(art, tmp_path / "second.log", **ENV) as base:
        second = arms_served(base, rounds=2)
        for user in USERS:
            arm = expected[user]
            served_by = "precomputed" if arm == "noscore" else "rerank"
            assert first[user] == {(arm, served_by)}, user
            assert second[user] == {(arm, served_by)}, user

        # Stopping the experiment reaches both workers at their next poll (1 s here).
        declare(art, tmp_path, status="stopped")
        deadline = time.monotonic() + 20
        while True:
            answers = [requests.post(f"{base}/v1/recommendations", json={"user_id": u},
                                     timeout=10).json()["experiments"] for u in USERS]
            if all(a == [] for a in answers):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.5)

    # The served log: both workers of each server answered, and logged the same arm.
    by_user: dict[str, set[str]] = defaultdict(set)
    pids: set[str] = set()
    for path in part_files(log_dir(art)):
        pid = re.match(r"part-(\d+)-", path.name)
        for row in pq.read_table(path).to_pylist():
            if row["assignments"]:
                by_user[row["user_id"]].add(row["assignments"][0]["arm"])
                pids.add(pid.group(1) if pid else path.name)
    assert len(pids) >= 3, pids  # at least two workers of one server and one of the other
    assert {u: arms for u, arms in by_user.items()} == {u: {a} for u, a in expected.items()}
