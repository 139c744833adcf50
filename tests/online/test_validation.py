"""Bad requests get 4xx JSON naming the field, never a stack trace."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 12}, "user_id"),
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 201}, "k"),
        ({"user_id": "u1", "k": "5"}, "k"),
        ({"user_id": "u1", "k": True}, "k"),
        ({"user_id": "u1", "context": {"region": 3}}, "context.region"),
        ({"user_id": "u1", "context": {"recent_item_ids": "m1"}}, "context.recent_item_ids"),
        ({"user_id": "u1", "exclude_item_ids": [1]}, "exclude_item_ids.0"),
        ({"user_id": "u1", "colour": "red"}, "colour"),
    ],
)
def test_recommendations_validation_names_the_field(
    client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    resp = client.post("/v1/recommendations", json=body)
    assert resp.status_code == 422
    data = resp.get_json()
    assert data["field"] == field
    assert data["error"]


def test_rerank_validation(client: FlaskClient) -> None:
    resp = client.post("/v1/rerank", json={"user_id": "u1", "candidate_item_ids": []})
    assert resp.status_code == 422 and resp.get_json()["field"] == "candidate_item_ids"
    too_many = [f"m{i}" for i in range(1001)]
    resp = client.post("/v1/rerank", json={"user_id": "u1", "candidate_item_ids": too_many})
    # 1001 ids exceed the 4 KiB body limit of the test app before validation runs.
    assert resp.status_code in (413, 422)


def test_invalid_json_is_400(client: FlaskClient) -> None:
    resp = client.post("/v1/recommendations", data="{not json", content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "request body is not valid JSON", "field": None}


def test_body_over_limit_is_413_json(client: FlaskClient) -> None:
    body = '{"user_id": "' + "x" * 10_000 + '"}'
    resp = client.post("/v1/recommendations", data=body, content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "request body too large"


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    resp = client.get("/v2/whatever")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not found"
    resp = client.get("/v1/recommendations")
    assert resp.status_code == 405 and resp.is_json


def test_unexpected_error_is_500_without_trace(app: Flask, client: FlaskClient) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    app.extensions["recsys"].recommender.recommend = boom
    resp = client.post("/v1/recommendations", json={"user_id": "u1"})
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "internal error", "field": None}
    assert b"secret" not in resp.data and b"Traceback" not in resp.data
