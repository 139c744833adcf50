"""Each way out of the re-rank path lands on the next list, with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from online.fallback import Budget, StageCosts
from online.scoring import ModelError, ScoreInput
from tests.online.conftest import make_app, recommend


def _client(artifacts: Path, **overrides: object):  # type: ignore[no-untyped-def]
    app = make_app(artifacts, **overrides)
    app.extensions["recsys"].store.ensure_started()
    return app.test_client()


def test_budget_zero_falls_back_to_precomputed(artifacts: Path) -> None:
    client = _client(artifacts, budget_ms=0)
    data = recommend(client, user_id="u2", k=5)
    assert data["served_by"] == "precomputed"
    assert data["fallback_reason"] == "budget_exceeded:candidates"
    assert data["scorer"] is None
    assert all("precomputed" in i["sources"] for i in data["items"])


def test_forced_fallback_flag_is_deterministic(artifacts: Path) -> None:
    client = _client(artifacts, force_fallback=True)
    for _ in range(3):
        assert recommend(client, user_id="u2", k=5)["served_by"] == "precomputed"


def test_no_precomputed_list_falls_to_popular_in_segment(artifacts: Path) -> None:
    client = _client(artifacts, budget_ms=0)
    data = recommend(client, user_id="u39", k=5)  # the factory's user without a list
    assert data["served_by"] == "popular_segment"  # u39 is odd: region "us"
    assert data["fallback_reason"] == "budget_exceeded:candidates;no_precomputed_list"


def test_region_without_segment_falls_to_global_popular(artifacts: Path) -> None:
    client = _client(artifacts, budget_ms=0)
    data = recommend(client, user_id="u39", k=5, context={"region": "mars"})
    assert data["served_by"] == "popular"


def test_cold_user_over_budget_gets_popular(artifacts: Path) -> None:
    client = _client(artifacts, budget_ms=0)
    data = recommend(client, user_id="new", k=5, context={"recent_item_ids": ["m1"]})
    assert data["served_by"] == "popular"
    assert data["fallback_reason"] == "budget_exceeded:candidates;unknown_user"


def _broken(inputs: ScoreInput) -> np.ndarray:
    raise ModelError("corrupt weights")


def test_model_error_falls_back_to_precomputed(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.extensions["recsys"].store.current.scorer, "score", _broken)
    client = app.test_client()
    data = recommend(client, user_id="u2", k=5)
    assert data["served_by"] == "precomputed"
    assert data["fallback_reason"] == "model_error"
    resp = client.post("/v1/rerank", json={"user_id": "u2", "candidate_item_ids": ["m2", "m4"]})
    assert resp.status_code == 200 and resp.get_json()["served_by"] == "caller_order"
    assert b'recsys_fallback_total{reason="model_error"}' in client.get("/metrics").data


def test_budget_skips_a_stage_whose_usual_cost_would_overrun() -> None:
    costs = StageCosts()
    costs.record("rerank", 0.030)  # 30 ms usually
    budget = Budget(budget_ms=20, costs=costs)
    assert budget.allows("candidates")  # no estimate yet: try it
    assert not budget.allows("rerank")
    assert Budget(budget_ms=50, costs=costs).allows("rerank")
    assert not Budget(budget_ms=50, costs=costs, forced=True).allows("candidates")


def test_slow_rerank_is_skipped_after_it_was_measured(artifacts: Path) -> None:
    # A budget no loaded machine's retrieval overruns, and a rerank cost five times it:
    # the skip is for rerank's measured cost, not for a slow test host.
    app = make_app(artifacts, budget_ms=1000)
    app.extensions["recsys"].recommender.costs.record("rerank", 5.0)
    client = app.test_client()
    data = recommend(client, user_id="u2", k=5)
    assert data["served_by"] == "precomputed"
    assert data["fallback_reason"] == "budget_exceeded:rerank"


def test_one_stalled_sample_does_not_move_the_estimate() -> None:
    costs = StageCosts()
    for _ in range(10):
        costs.record("rerank", 0.0002)
    costs.record("rerank", 0.5)  # the worker was preempted once
    assert Budget(budget_ms=50, costs=costs).allows("rerank")


def test_a_stage_skipped_for_cost_is_retried_later() -> None:
    costs = StageCosts()
    costs.record("rerank", 0.200)  # only sample: 200 ms, four times the budget
    tries = 0
    while not Budget(budget_ms=50, costs=costs).allows("rerank"):
        tries += 1
        assert tries < 50, "the estimate never decayed: the worker is stuck in fallback"
    assert tries > 0


def test_popular_only_serves_every_user_the_popular_list(artifacts: Path) -> None:
    client = _client(artifacts, popular_only=True)
    personal = recommend(_client(artifacts), user_id="u2", k=5)
    for user in ("u2", "u3"):
        data = recommend(client, user_id=user, k=5)
        assert data["served_by"] in ("popular_segment", "popular_global")
        assert data["fallback_reason"] == "popular_only"
        assert data["scorer"] is None
        assert all("popular" in i["sources"] for i in data["items"])
    assert personal["served_by"] == "rerank"
