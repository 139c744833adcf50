"""The public endpoints on a synthetic bundle with a known structure (see bundle_factory)."""

from __future__ import annotations

import math

import numpy as np
from flask.testing import FlaskClient

from tests.online.bundle_factory import item_genre, item_regions
from tests.online.conftest import recommend


def _idx(item_id: str) -> int:
    return int(item_id[1:])


def _seen(client: FlaskClient, user_id: str) -> set[int]:
    bundle = client.application.extensions["recsys"].store.current
    user_idx = bundle.user_index[user_id]
    return set(bundle.seen(user_idx).tolist())


def test_known_user_is_reranked_with_sources_and_titles(client: FlaskClient) -> None:
    data = recommend(client, user_id="u2", k=10)
    assert data["served_by"] == "rerank"
    assert data["scorer"] == "als-dot"
    assert data["fallback_reason"] is None
    assert data["bundle"] == "run-a"
    assert len(data["items"]) == 10
    assert all(item["sources"] and item["title"] for item in data["items"])
    assert any("precomputed" in item["sources"] for item in data["items"])
    assert data["took_ms"] >= 0


def test_answer_never_contains_seen_items(client: FlaskClient) -> None:
    for user in ("u0", "u1", "u7"):
        data = recommend(client, user_id=user, k=50)
        assert not {_idx(i["item_id"]) for i in data["items"]} & _seen(client, user)


def test_excluded_and_recent_items_are_dropped(client: FlaskClient) -> None:
    first = recommend(client, user_id="u4", k=10)
    drop = [i["item_id"] for i in first["items"][:3]]
    recent = [first["items"][3]["item_id"]]
    data = recommend(
        client, user_id="u4", k=10, exclude_item_ids=drop, context={"recent_item_ids": recent}
    )
    returned = {i["item_id"] for i in data["items"]}
    assert not returned & set(drop + recent)
    assert len(returned) == 10


def test_region_availability(client: FlaskClient) -> None:
    for user, region in (("u0", "eu"), ("u1", "us")):
        data = recommend(client, user_id=user, k=40)
        for item in data["items"]:
            allowed = item_regions(_idx(item["item_id"]))
            assert allowed is None or region in allowed.split("|")
    # The request's region overrides the user's stored one.
    data = recommend(client, user_id="u0", k=40, context={"region": "us"})
    assert all(item_regions(_idx(i["item_id"])) != "eu" for i in data["items"])


def test_diversity_caps_one_genre_at_half_the_row(client: FlaskClient) -> None:
    # 3 in 4 items are Drama-first in the synthetic catalogue: the cap must bind.
    for k in (4, 7, 10):
        for user in ("u3", "u8", "nobody"):
            data = recommend(client, user_id=user, k=k)
            firsts = [item_genre(_idx(i["item_id"])).split("|")[0] for i in data["items"]]
            assert max(firsts.count(g) for g in set(firsts)) <= math.ceil(k / 2)


def test_cold_user_with_recent_items_gets_item_based_rerank(client: FlaskClient) -> None:
    data = recommend(
        client, user_id="new-user", k=5, context={"recent_item_ids": ["m3", "m10", "zzz"]}
    )
    assert data["served_by"] == "rerank"
    assert all("recent" in i["sources"] for i in data["items"])
    assert not {"m3", "m10"} & {i["item_id"] for i in data["items"]}


def test_unknown_user_without_context_gets_popular(client: FlaskClient) -> None:
    data = recommend(client, user_id="stranger", k=5)
    assert data["served_by"] == "popular"
    assert data["fallback_reason"] == "unknown_user"
    data = recommend(client, user_id="stranger", k=5, context={"region": "eu"})
    assert data["served_by"] == "popular_segment"
    assert all("popular" in i["sources"] for i in data["items"])


def test_rerank_orders_callers_items_and_reports_unknown(client: FlaskClient) -> None:
    bundle = client.application.extensions["recsys"].store.current
    seen = _seen(client, "u2")
    ids = [f"m{i}" for i in range(60) if i not in seen and item_regions(i) != "us"][:12]
    resp = client.post(
        "/v1/rerank",
        json={"user_id": "u2", "candidate_item_ids": [*ids, "nope"], "k": 6},
    )
    data = resp.get_json()
    assert resp.status_code == 200
    assert data["unknown_item_ids"] == ["nope"]
    assert data["served_by"] == "rerank"
    assert {i["item_id"] for i in data["items"]} <= set(ids)
    expected = (
        bundle.item_factors[[_idx(i["item_id"]) for i in data["items"]]] @ (bundle.user_factors[2])
    )
    assert np.allclose([i["score"] for i in data["items"]], expected, atol=1e-4)


def test_rerank_for_unknown_user_keeps_caller_order(client: FlaskClient) -> None:
    resp = client.post(
        "/v1/rerank", json={"user_id": "ghost", "candidate_item_ids": ["m2", "m4", "m3"], "k": 3}
    )
    data = resp.get_json()
    assert data["served_by"] == "caller_order"
    assert data["fallback_reason"] == "unknown_user"
    assert [i["item_id"] for i in data["items"]] == ["m2", "m4", "m3"]


def test_similar_items_exclude_the_item(client: FlaskClient) -> None:
    resp = client.get("/v1/items/m5/similar?k=7")
    data = resp.get_json()
    assert resp.status_code == 200
    assert len(data["items"]) == 7
    assert "m5" not in {i["item_id"] for i in data["items"]}
    scores = [i["score"] for i in data["items"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_unknown_item_and_bad_k(client: FlaskClient) -> None:
    resp = client.get("/v1/items/nope/similar")
    assert resp.status_code == 404 and resp.get_json()["field"] == "item_id"
    resp = client.get("/v1/items/m5/similar?k=0")
    assert resp.status_code == 422 and resp.get_json()["field"] == "k"


def test_health_ready_ping_openapi_and_page(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["bundle"] == "run-a"
    assert client.get("/v1/ping").get_json() == {"pong": True}
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/recommendations" in spec["paths"]
    assert "RecommendationRequest" in spec["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and b"/v1/recommendations" in page.data


def test_readyz_is_503_without_a_bundle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.online.conftest import make_app

    client = make_app(tmp_path).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["ready"] is False
    resp = client.post("/v1/recommendations", json={"user_id": "u1"})
    assert resp.status_code == 503 and "error" in resp.get_json()
    assert client.get("/healthz").status_code == 200
