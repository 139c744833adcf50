"""The HTTP edge of the app (Flask test client): what a client sees for bodies of the wrong
type or size, methods a route does not take, numbers and query parameters on the border of
the contract, and the headers every answer carries. The same behaviour through gunicorn,
and what gunicorn itself refuses, is in tests/e2e/test_service_edge_e2e.py."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from online.openapi import build_spec

LIMIT = 4096  # max_content_length of the test app (tests/online/conftest.py)


def _post_chunked(client: FlaskClient, body: bytes) -> Any:
    """A POST whose body has no Content-Length, as a chunked request reaches the app."""
    builder = EnvironBuilder(
        path="/v1/recommendations",
        method="POST",
        input_stream=io.BytesIO(body),
        content_type="application/json",
    )
    environ = builder.get_environ()
    builder.close()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True  # what gunicorn sets: it ends the stream itself
    return client.open(Request(environ))  # as is (a dict would be rebuilt, with a length)


def _padded(size: int) -> bytes:
    """A valid request body of exactly `size` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"user_id": "u1", "k": 3}).encode()
    return body + b" " * (size - len(body))


def test_an_oversized_chunked_body_is_413_like_one_with_a_content_length(
    client: FlaskClient,
) -> None:
    with_length = client.post(
        "/v1/recommendations", data=_padded(LIMIT + 1), content_type="application/json"
    )
    chunked = _post_chunked(client, _padded(LIMIT + 1))
    for resp in (with_length, chunked):
        assert resp.status_code == 413
        assert resp.get_json() == {"error": "request body too large", "field": None}
    # The limit itself is allowed in either framing (a body is not cut at the limit).
    assert _post_chunked(client, _padded(LIMIT)).status_code == 200
    resp = client.post("/v1/recommendations", data=_padded(LIMIT), content_type="application/json")
    assert resp.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_declared_json_is_415(client: FlaskClient, content_type: str | None) -> None:
    body = json.dumps({"user_id": "u1", "k": 3})
    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post("/v1/recommendations", data=body, headers=headers)
    assert resp.status_code == 415
    assert resp.get_json()["field"] == "Content-Type"
    assert "application/json" in resp.get_json()["error"]
    resp = client.post("/v1/rerank", data=body, headers=headers)
    assert resp.status_code == 415


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/x+json"]
)
def test_json_media_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    body = json.dumps({"user_id": "u1", "k": 3})
    resp = client.post("/v1/recommendations", data=body, headers={"Content-Type": content_type})
    assert resp.status_code == 200


def test_405_names_the_allowed_methods(client: FlaskClient) -> None:
    resp = client.delete("/v1/recommendations")
    assert resp.status_code == 405
    assert resp.get_json() == {"error": "method not allowed", "field": None}
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"POST", "OPTIONS"}
    resp = client.post("/v1/ping")
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]


def test_k_as_an_integral_number_is_accepted_as_the_schema_says(client: FlaskClient) -> None:
    """OpenAPI 3.1 (JSON Schema) `integer` includes 126.0; the service now agrees."""
    spec = build_spec()["components"]["schemas"]
    assert spec["RecommendationRequest"]["properties"]["k"]["type"] == "integer"
    assert spec["RerankRequest"]["properties"]["k"]["type"] == "integer"
    resp = client.post("/v1/recommendations", json={"user_id": "u1", "k": 126.0})
    assert resp.status_code == 200 and len(resp.get_json()["items"]) <= 126
    resp = client.post("/v1/recommendations", data='{"user_id": "u1", "k": 1e1}',
                       content_type="application/json")  # fmt: skip
    assert resp.status_code == 200 and len(resp.get_json()["items"]) == 10
    for bad in (126.5, "126", True, 201.0):
        resp = client.post("/v1/recommendations", json={"user_id": "u1", "k": bad})
        assert resp.status_code == 422, bad
        assert resp.get_json()["field"] == "k"
    resp = client.post(
        "/v1/rerank", json={"user_id": "u1", "candidate_item_ids": ["m1", "m2"], "k": 2.0}
    )
    assert resp.status_code == 200


def test_a_repeated_query_parameter_is_refused_naming_it(client: FlaskClient) -> None:
    resp = client.get("/v1/items/m1/similar?k=3&k=999")
    assert resp.status_code == 422
    assert resp.get_json() == {"error": "query parameter given more than once", "field": "k"}
    assert client.get("/v1/items/m1/similar?k=3").status_code == 200
    resp = client.get("/v1/items/m1/similar?k=3&color=red")
    assert resp.status_code == 422 and resp.get_json()["field"] == "color"


def test_metrics_content_type_names_its_charset_once(client: FlaskClient) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_every_answer_carries_the_security_headers(client: FlaskClient) -> None:
    answers = [
        client.post("/v1/recommendations", json={"user_id": "u1", "k": 3}),
        client.post("/v1/recommendations", json={"user_id": "u1", "k": 0}),  # 422
        client.get("/no/such/route"),
        client.get("/v1/ping"),
        client.get("/readyz"),
        client.get("/metrics"),
        client.get("/"),
    ]
    for resp in answers:
        assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.request.path
        assert resp.headers["Cache-Control"] == "no-store", resp.request.path


def test_the_page_has_a_csp_whose_nonce_its_script_and_style_carry(client: FlaskClient) -> None:
    resp = client.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self'" in csp and "unsafe-inline" not in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None
    html = resp.get_data(as_text=True)
    assert f'<script nonce="{nonce.group(1)}">' in html
    assert f'<style nonce="{nonce.group(1)}">' in html
    assert html.count("<script") == 1 and html.count("<style") == 1  # nothing unsigned
    again = client.get("/").headers["Content-Security-Policy"]
    assert again != csp  # a fresh nonce per answer
