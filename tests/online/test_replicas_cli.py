"""`recsys replicas`: the commands that talk to a running supervisor say how to start one
when there is none, and `up` refuses contradictory Redis options before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.errors import UsageError


def _recsys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_roll_without_a_supervisor_names_the_command_that_starts_one(tmp_path: Path) -> None:
    # roll, status and down share the lookup: one is enough (each run imports the whole CLI).
    done = _recsys("replicas", "roll", "--state-dir", str(tmp_path))
    assert done.returncode == UsageError.exit_code, done.stderr
    assert "is `recsys replicas up` running" in done.stderr


def test_up_refuses_both_redis_options_before_starting_anything(tmp_path: Path) -> None:
    done = _recsys("replicas", "up", "--artifacts", str(tmp_path), "--state-dir",
                   str(tmp_path / "state"), "--redis", "--redis-url", "redis://127.0.0.1:1/0")  # fmt: skip
    assert done.returncode == UsageError.exit_code
    assert "not both" in done.stderr
    assert not (tmp_path / "state").exists()
