"""Liveness and readiness: /healthz says the process answers, /readyz that it can serve.

/readyz also reports a refusal: while CURRENT names a bundle this worker refused, `refused`
holds that run id and the reason, beside the bundle it serves instead (200) or the reason
it serves none (503). `refused` is null when the worker serves what CURRENT names.
"""

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
    refusal = store.refusal
    refused = None if refusal is None else {"run_id": refusal.run_id, "error": refusal.error}
    if bundle is None:
        return {"ready": False, "bundle": None, "error": store.last_error, "refused": refused}, 503
    return {
        "ready": True,
        "bundle": bundle.run_id,
        "scorer": bundle.scorer.name,
        "refused": refused,
    }, 200
