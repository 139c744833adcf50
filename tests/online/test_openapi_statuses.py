"""Every status the app answers a valid request with is one /openapi.json declares for that
operation, with a bundle and before one is loaded (the e2e schemathesis run,
tests/e2e/test_schemathesis_e2e.py, does the same with generated requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from online.openapi import build_spec
from tests.online.conftest import ADMIN_TOKEN, make_app

# One valid request per documented operation: (method, path template, url, keyword args).
REQUESTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("post", "/v1/recommendations", "/v1/recommendations", {"json": {"user_id": "u1"}}),
    ("post", "/v1/rerank", "/v1/rerank",
     {"json": {"user_id": "u1", "candidate_item_ids": ["m1", "m2"]}}),
    ("get", "/v1/items/{item_id}/similar", "/v1/items/m1/similar", {"query_string": {"k": 5}}),
    ("post", "/v1/events", "/v1/events",
     {"json": {"events": [{"type": "click", "user_id": "u1", "item_id": "m1"}]}}),
    ("get", "/readyz", "/readyz", {}),
    ("get", "/healthz", "/healthz", {}),
    ("get", "/v1/ping", "/v1/ping", {}),
    ("get", "/metrics", "/metrics", {}),
    ("post", "/admin/reload", "/admin/reload", {"headers": {"X-Admin-Token": ADMIN_TOKEN}}),
]  # fmt: skip


def test_every_documented_operation_has_a_request_here() -> None:
    documented = {(m, p) for p, ops in build_spec()["paths"].items() for m in ops}
    assert {(m, p) for m, p, _, _ in REQUESTS} == documented


def _declared(method: str, path: str) -> set[int]:
    return {int(code) for code in build_spec()["paths"][path][method]["responses"]}


@pytest.mark.parametrize(("method", "path", "url", "kwargs"), REQUESTS)
def test_status_is_declared_with_a_bundle(
    client: FlaskClient, method: str, path: str, url: str, kwargs: dict[str, Any]
) -> None:
    resp = client.open(url, method=method.upper(), **kwargs)
    assert resp.status_code in _declared(method, path), (resp.status_code, resp.data[:200])
    assert resp.status_code < 400, resp.data[:200]


@pytest.mark.parametrize(("method", "path", "url", "kwargs"), REQUESTS)
def test_status_is_declared_before_a_bundle(
    tmp_path: Path, method: str, path: str, url: str, kwargs: dict[str, Any]
) -> None:
    """GET /similar answered 503 without declaring it."""
    client = make_app(tmp_path, request_log=False).test_client()  # no CURRENT in tmp_path
    resp = client.open(url, method=method.upper(), **kwargs)
    assert resp.status_code in _declared(method, path), (resp.status_code, resp.data[:200])
