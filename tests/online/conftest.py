from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from online.app import create_app
from online.config import ServiceConfig
from tests.online.bundle_factory import build_bundle

ADMIN_TOKEN = "test-token"


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    build_bundle(tmp_path, "run-a")
    return tmp_path


def make_app(artifacts: Path, **overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "artifacts": artifacts,
        "reload_poll_seconds": 0,
        "admin_token": ADMIN_TOKEN,
        "max_content_length": 4096,
    }
    settings.update(overrides)
    return create_app(ServiceConfig(**settings))


@pytest.fixture
def app(artifacts: Path) -> Iterator[Flask]:
    # A budget no loaded test host overruns (the first request of a fresh app pays for its
    # warm-up): the tests on this fixture check answers, not fallbacks; those set their own.
    app = make_app(artifacts, budget_ms=10_000)
    app.extensions["recsys"].store.ensure_started()  # as gunicorn's post_worker_init does
    yield app
    app.extensions["recsys"].store.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def recommend(client: FlaskClient, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/recommendations", json=body)
    assert resp.status_code == 200, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data
