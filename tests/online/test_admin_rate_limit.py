"""Wrong admin tokens are rate limited per client address: a burst, then a rate; past it
every attempt from that address is 429 (JSON, Retry-After), a right token included."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from online import metrics
from online.admin import LIMITER
from online.ratelimit import FailureLimiter
from tests.online.conftest import ADMIN_TOKEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reload(client: FlaskClient, token: str | None, addr: str = "10.0.0.1") -> tuple[int, dict]:
    headers = {"X-Admin-Token": token} if token is not None else {}
    resp = client.post("/admin/reload", headers=headers, environ_base={"REMOTE_ADDR": addr})
    return resp.status_code, resp.get_json() | {"retry_after": resp.headers.get("Retry-After")}


def _count(outcome: str) -> float:
    return metrics.ADMIN_AUTH.labels(outcome)._value.get()


def test_limiter_burst_then_rate() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=3, per_minute=6, clock=clock)  # one more every 10 s
    for _ in range(3):
        assert limiter.retry_after("a") == 0
        limiter.failed("a")
    assert limiter.retry_after("a") == 10.0
    assert limiter.retry_after("b") == 0  # per key
    clock.now += 9.0
    assert 0 < limiter.retry_after("a") <= 1.0
    clock.now += 1.0
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") == 10.0


def test_limiter_state_is_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(burst=2, per_minute=60, max_keys=100, clock=clock)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) <= 100
    limiter.failed("x")
    limiter.failed("x")
    assert limiter.retry_after("x") > 0  # the newest key survives a prune


def test_admin_token_guesses_are_rate_limited_per_address(app: Flask, client: FlaskClient) -> None:
    clock = Clock()
    app.extensions[LIMITER] = FailureLimiter(burst=5, per_minute=2, clock=clock)
    limited_before = _count("rate_limited")
    for _ in range(5):
        assert _reload(client, "guess")[0] == 403
    status, body = _reload(client, "guess")
    assert status == 429
    assert body == {
        "error": "too many invalid admin tokens; retry later",
        "field": "X-Admin-Token",
        "retry_after": "30",
    }
    assert _reload(client, ADMIN_TOKEN)[0] == 429  # no oracle while limited
    assert _reload(client, ADMIN_TOKEN, addr="10.0.0.2")[0] == 200  # another address
    assert _reload(client, None)[0] == 429
    assert _count("rate_limited") == limited_before + 3
    clock.now += 30.0
    assert _reload(client, ADMIN_TOKEN)[0] == 200
    assert _reload(client, "guess")[0] == 403
    assert _reload(client, "guess")[0] == 429


def test_missing_tokens_do_not_use_up_the_budget(app: Flask, client: FlaskClient) -> None:
    app.extensions[LIMITER] = FailureLimiter(burst=2, per_minute=1, clock=Clock())
    for _ in range(10):
        assert _reload(client, None)[0] == 401
    assert _reload(client, ADMIN_TOKEN)[0] == 200


def test_the_limit_comes_from_the_config(artifacts) -> None:  # type: ignore[no-untyped-def]
    from tests.online.conftest import make_app

    app = make_app(artifacts, admin_failures_burst=2, admin_failures_per_minute=60)
    client = app.test_client()
    try:
        assert [_reload(client, "guess")[0] for _ in range(3)] == [403, 403, 429]
        assert _reload(client, "guess")[1]["retry_after"] == "1"
    finally:
        app.extensions["recsys"].store.stop()
