"""RECSYS_WORKER_TIMEOUT: validated with the other settings, and what gunicorn is given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from online.config import ServiceConfig, describe_error


def test_default_and_floor() -> None:
    assert ServiceConfig.from_env({"RECSYS_ARTIFACTS": "/a"}).worker_timeout == 60
    assert ServiceConfig.from_env(
        {"RECSYS_ARTIFACTS": "/a", "RECSYS_WORKER_TIMEOUT": "2"}
    ).worker_timeout == 2
    # Below 2 s the event loop's once-a-second check-in would not keep a healthy worker.
    with pytest.raises(ValidationError) as exc:
        ServiceConfig.from_env({"RECSYS_ARTIFACTS": "/a", "RECSYS_WORKER_TIMEOUT": "1"})
    assert "RECSYS_WORKER_TIMEOUT" in describe_error(exc.value)


def test_gunicorn_is_given_the_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The config module as gunicorn's master reads it, in a process of its own (it sets
    environment variables at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env |= {"RECSYS_ARTIFACTS": str(tmp_path), "RECSYS_RUNTIME_DIR": str(tmp_path),
            "RECSYS_WORKER_TIMEOUT": "7"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", "import online.gunicorn_conf as c; print(c.timeout)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "7"
