"""POST /admin/reload: load CURRENT now instead of waiting for the poll; and the admin
token check other admin-only features share (a forced experiment arm, online/api.py).

The token is compared in constant time. Without a configured token the endpoint is closed
(403), so a forgotten setting never leaves it open. Wrong tokens are rate limited per client
address (`admin_failures_burst` at once, then `admin_failures_per_minute`, per worker):
past the limit every attempt from that address is answered 429 with a Retry-After, a right
token included, until its bucket refills.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, current_app, request

from online import metrics
from online.errors import TooManyAttempts
from online.ratelimit import FailureLimiter
from online.service import get_service
from shared.errors import ApiError

bp = Blueprint("admin", __name__, url_prefix="/admin")

TOKEN_HEADER = "X-Admin-Token"
LIMITER = "recsys.admin_limiter"


def limiter() -> FailureLimiter:
    """This app's limiter (one per worker), built on first use from the config."""
    found: FailureLimiter | None = current_app.extensions.get(LIMITER)
    if found is None:
        config = get_service().config
        made = FailureLimiter(config.admin_failures_burst, config.admin_failures_per_minute)
        found = current_app.extensions.setdefault(LIMITER, made)
    return found


def _check_token(for_header: str | None = None) -> None:
    """The admin token, or an error. for_header: a request header that is honoured only with
    the token (X-Recsys-Arm); a missing or wrong token then answers 403 naming that header,
    as the caller asked for something it may not have, not for an admin endpoint."""
    client = request.remote_addr or "unknown"
    wait = limiter().retry_after(client)
    if wait > 0:
        metrics.ADMIN_AUTH.labels("rate_limited").inc()
        raise TooManyAttempts("too many invalid admin tokens; retry later", TOKEN_HEADER, wait)
    expected = get_service().config.admin_token
    given = request.headers.get(TOKEN_HEADER)
    if given is None:
        metrics.ADMIN_AUTH.labels("missing").inc()
        if for_header is not None:
            raise ApiError(403, f"{for_header} is honoured only with a valid {TOKEN_HEADER}",
                           for_header)  # fmt: skip
        raise ApiError(401, f"missing {TOKEN_HEADER} header", TOKEN_HEADER)
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        limiter().failed(client)
        metrics.ADMIN_AUTH.labels("invalid").inc()
        if for_header is not None:
            raise ApiError(403, f"{for_header} is honoured only with a valid {TOKEN_HEADER}",
                           for_header)  # fmt: skip
        raise ApiError(403, "invalid admin token", TOKEN_HEADER)
    metrics.ADMIN_AUTH.labels("accepted").inc()


def require_token_for(header: str) -> None:
    """403 naming `header` unless the request carries the admin token (see _check_token)."""
    _check_token(for_header=header)


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
