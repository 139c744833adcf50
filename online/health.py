"""Liveness and readiness: /healthz says the process answers, /readyz that it can serve."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from online.service import get_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    store = get_service().store
    bundle = store.current
    if bundle is None:
        return {"ready": False, "bundle": None, "error": store.last_error}, 503
    return {"ready": True, "bundle": bundle.run_id, "scorer": bundle.scorer.name}, 200
