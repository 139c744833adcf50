"""Settings come from RECSYS_* env and flags; `recsys serve --help` works without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from online.cli import register
from online.config import ServiceConfig, describe_error


def test_env_then_overrides() -> None:
    env = {"RECSYS_ARTIFACTS": "/a", "RECSYS_BUDGET_MS": "12.5", "RECSYS_WORKERS": "3"}
    config = ServiceConfig.from_env(env, workers=4, port=None)
    assert config.artifacts == Path("/a")
    assert config.budget_ms == 12.5 and config.workers == 4 and config.port == 8000


def test_round_trip_through_env() -> None:
    config = ServiceConfig(artifacts=Path("/a"), admin_token="t", force_fallback=True)
    assert ServiceConfig.from_env(config.to_env()) == config


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ValidationError) as info:
        ServiceConfig.from_env({"RECSYS_ARTIFACTS": "/a", "RECSYS_BUDGET_MS": "-1"})
    assert "RECSYS_BUDGET_MS" in describe_error(info.value)


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    register(app)
    return app


def test_serve_help() -> None:
    result = CliRunner().invoke(_cli(), ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--artifacts", "--port", "--workers", "--budget-ms", "--admin-token"):
        assert flag in result.output


def test_serve_refuses_a_missing_artifacts_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), ["serve", "--artifacts", str(tmp_path / "nope")])
    assert result.exit_code == 2
