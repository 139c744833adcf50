"""POST /admin/reload: load CURRENT now instead of waiting for the poll.

The token is compared in constant time. Without a configured token the endpoint is closed
(403), so a forgotten setting never leaves it open.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, request

from online.service import get_service
from shared.errors import ApiError

bp = Blueprint("admin", __name__, url_prefix="/admin")

TOKEN_HEADER = "X-Admin-Token"


def _check_token() -> None:
    expected = get_service().config.admin_token
    given = request.headers.get(TOKEN_HEADER)
    if given is None:
        raise ApiError(401, f"missing {TOKEN_HEADER} header", TOKEN_HEADER)
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "invalid admin token", TOKEN_HEADER)


@bp.post("/reload")
def reload() -> tuple[dict[str, Any], int]:
    _check_token()
    store = get_service().store
    result = store.reload(force=True)
    if result.status == "loaded" or result.status == "unchanged":
        store.announce_reload()
    body = {
        "status": result.status,
        "run_id": result.run_id,
        "serving": result.serving,
        "error": result.error,
    }
    return body, 200 if result.status != "refused" else 409
