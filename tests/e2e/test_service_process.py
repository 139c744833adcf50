"""shared.service_process: the one starter of `recsys serve` (tests, benchmarks, simulator)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.service_process import ServiceStartError, clean_env, start_service

pytestmark = pytest.mark.e2e


def test_a_server_that_exits_raises_with_its_log_tail(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError) as caught:
        start_service(tmp_path / "no-such-artifacts", tmp_path / "serve.log", ready_timeout_s=60)
    message = str(caught.value)
    assert "exited with" in message and "no-such-artifacts" in message  # the CLI's own error


def test_the_callers_recsys_settings_do_not_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_POPULAR_ONLY", "true")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/elsewhere")
    env = clean_env({"RECSYS_WORKERS": "3"})
    assert env["RECSYS_WORKERS"] == "3" and "RECSYS_POPULAR_ONLY" not in env
    assert "PROMETHEUS_MULTIPROC_DIR" not in env and env["PATH"] == os.environ["PATH"]
