"""GET /openapi.json: an OpenAPI 3.1 document generated from the pydantic models."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint
from pydantic import BaseModel

from online.event_schemas import EventsRequest, EventsResponse
from online.schemas import (
    ErrorResponse,
    ReadyResponse,
    RecommendationRequest,
    RecommendationResponse,
    ReloadResponse,
    RerankRequest,
    RerankResponse,
    SimilarResponse,
)

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [
    RecommendationRequest,
    RecommendationResponse,
    RerankRequest,
    RerankResponse,
    SimilarResponse,
    ErrorResponse,
    ReloadResponse,
    ReadyResponse,
    EventsRequest,
    EventsResponse,
]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(ErrorResponse, "error") for code in codes}


@cache
def build_spec() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    post: dict[str, tuple[type[BaseModel], type[BaseModel], str]] = {
        "/v1/recommendations": (RecommendationRequest, RecommendationResponse, "Top-k for a user"),
        "/v1/rerank": (RerankRequest, RerankResponse, "Score and order the caller's items"),
    }
    # A forced experiment arm (docs/experiments.md): QA only, so it needs the admin token;
    # without it 403 names X-Recsys-Arm, an unknown experiment or arm is 422.
    arm_headers = [
        {
            "name": "X-Recsys-Arm",
            "in": "header",
            "required": False,
            "description": "force arms: experiment=arm[, experiment=arm]; needs X-Admin-Token",
            "schema": {"type": "string"},
        },
        {
            "name": "X-Admin-Token",
            "in": "header",
            "required": False,
            "description": "the admin token; required with X-Recsys-Arm",
            "schema": {"type": "string"},
        },
    ]
    paths: dict[str, Any] = {
        path: {
            "post": {
                "summary": summary,
                "parameters": arm_headers,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(req)}},
                },
                "responses": {"200": _json(resp, "ranked items")}
                | _errors(400, 403, 408, 413, 415, 422, 429, 503),
            }
        }
        for path, (req, resp, summary) in post.items()
    }
    paths["/v1/events"] = {
        "post": {
            "summary": "Feedback events, 1..1000 per batch, all-or-nothing (docs/feedback.md)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(EventsRequest)}},
            },
            # 202: taken (logged and recorded); repeated event ids are acknowledged as
            # duplicates. 422 names the first bad field as events[i].field; 503 when the
            # event log's buffer is full (nothing taken: retry).
            "responses": {"202": _json(EventsResponse, "accepted")}
            | _errors(400, 408, 413, 415, 422, 503),
        }
    }
    paths["/v1/items/{item_id}/similar"] = {
        "get": {
            "summary": "Nearest items in the bundle's ANN index (the item itself excluded)",
            "parameters": [
                {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "k",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
                },
            ],
            # 503 before a bundle is loaded, as for the POST endpoints.
            "responses": {"200": _json(SimilarResponse, "neighbours")} | _errors(404, 422, 503),
        }
    }
    paths["/readyz"] = {
        "get": {
            "summary": "200 when a valid bundle is loaded",
            "responses": {"200": _json(ReadyResponse, "ready"), "503": _json(ReadyResponse, "not")},
        }
    }
    paths["/admin/reload"] = {
        "post": {
            "summary": "Load the bundle named by CURRENT now",
            "parameters": [
                {
                    "name": "X-Admin-Token",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": _json(ReloadResponse, "loaded or unchanged"),
                "409": _json(ReloadResponse, "refused; the old bundle serves"),
            }
            | _errors(401, 403, 429),
        }
    }
    for path, summary in [
        ("/healthz", "alive"),
        ("/v1/ping", "trivial JSON"),
        ("/metrics", "Prometheus text format"),
    ]:
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsys online service",
            "version": "1",
            "description": (
                "Every error is JSON {error, field}, including those answered before the "
                "application: 400 (malformed request line, header or framing), 408 "
                "(request not received in time), 414 (request line over 4094 bytes), 431 "
                "(over 100 header fields or one over 8190 bytes), 501 (unknown "
                "Transfer-Encoding). Repeated query parameters are refused (422)."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return build_spec()
