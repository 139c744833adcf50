"""The LRU caches: bounded, counted, and visible as a hit ratio in /metrics."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from online.cache import LRUCache
from tests.online.conftest import recommend


def test_lru_evicts_the_least_recently_used() -> None:
    cache: LRUCache[int] = LRUCache("t", maxsize=2)
    cache.get_or_compute("a", lambda: 1)
    cache.get_or_compute("b", lambda: 2)
    cache.get_or_compute("a", lambda: 99)  # hit: "a" becomes the most recent
    cache.get_or_compute("c", lambda: 3)  # evicts "b"
    assert cache.get_or_compute("b", lambda: 4) == 4
    assert cache.get_or_compute("a", lambda: 5) == 5  # "a" went when "b" came back
    assert (cache.hits, cache.misses) == (1, 5)
    assert len(cache) == 2


def test_disabled_cache_always_computes() -> None:
    cache: LRUCache[int] = LRUCache("off", maxsize=0)
    assert [cache.get_or_compute("a", lambda i=i: i) for i in range(3)] == [0, 1, 2]
    assert cache.hit_ratio == 0.0


def test_repeat_requests_hit_and_metrics_show_the_ratio(client: FlaskClient) -> None:
    caches = client.application.extensions["recsys"].store.current.caches
    scored, ann = caches.scored, caches.ann_user
    before = (scored.hits, scored.misses, ann.hits, ann.misses)
    answers = [recommend(client, user_id="u5", k=5) for _ in range(4)]
    after = (scored.hits, scored.misses, ann.hits, ann.misses)
    # The first request computes (one ANN search), the next three reuse its scored candidates.
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (3, 1, 0, 1)
    assert all(a["items"] == answers[0]["items"] for a in answers)
    assert all(a["served_by"] == "rerank" for a in answers)
    text = client.get("/metrics").data.decode()
    match = re.search(r'recsys_cache_hit_ratio\{cache="scored"\} ([0-9.]+)', text)
    assert match and 0.0 < float(match.group(1)) <= 1.0
    assert "recsys_stage_seconds_bucket" in text and 'stage="rerank"' in text


def test_scored_cache_keys_on_context_and_rules_still_apply(client: FlaskClient) -> None:
    scored = client.application.extensions["recsys"].store.current.caches.scored
    first = recommend(client, user_id="u6", k=5)
    misses = scored.misses
    recommend(client, user_id="u6", k=5, context={"recent_item_ids": ["m3"]})
    assert scored.misses == misses + 1  # other recent items: other candidates, other scores
    top = first["items"][0]["item_id"]
    again = recommend(client, user_id="u6", k=5, exclude_item_ids=[top])
    assert top not in {i["item_id"] for i in again["items"]}  # exclusions are per request
    assert len(again["items"]) == 5
