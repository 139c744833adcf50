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
    cache = client.application.extensions["recsys"].store.current.caches["ann_user"]
    hits, misses = cache.hits, cache.misses
    for _ in range(4):
        recommend(client, user_id="u5", k=5)
    assert (cache.hits - hits, cache.misses - misses) == (3, 1)
    text = client.get("/metrics").data.decode()
    match = re.search(r'recsys_cache_hit_ratio\{cache="ann_user"\} ([0-9.]+)', text)
    assert match and 0.0 < float(match.group(1)) <= 1.0
    assert "recsys_stage_seconds_bucket" in text and 'stage="rerank"' in text
