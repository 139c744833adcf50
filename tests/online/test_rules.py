"""The rules as pure functions, on tiny arrays with a known answer."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from online.rules import allowed, diversify, genre_cap, select


def test_genre_cap_is_half_the_row_rounded_up() -> None:
    assert [genre_cap(k) for k in (1, 2, 3, 10, 11)] == [1, 1, 2, 5, 6]


def test_diversify_skips_the_third_of_a_genre_for_k4() -> None:
    genres = np.array([0, 0, 0, 1, 0, 2])
    assert diversify(np.arange(6), genres, k=4).tolist() == [0, 1, 3, 5]


def test_allowed_drops_blocked_and_unavailable() -> None:
    items = np.array([0, 1, 2, 3])
    region = np.array([True, False, True, True])
    assert allowed(items, np.array([3]), region).tolist() == [True, False, True, False]
    assert allowed(items, np.array([], np.int32), None).all()


def test_select_orders_by_score_then_tops_up_in_given_order() -> None:
    items = np.array([5, 6, 7, 9, 8, 5])  # primary: 5, 6, 7; top-up: 9, 8, 5 (dup)
    scores = np.array([0.1, 0.9, 0.5, 100.0, 50.0, 0.0], np.float32)
    genres = np.arange(10)  # all distinct: no cap
    picked = select(
        items,
        scores,
        blocked=np.array([7]),
        region_mask=None,
        first_genre=genres,
        k=4,
        n_primary=3,
    )
    assert items[picked].tolist() == [6, 5, 9, 8]


@settings(max_examples=60, deadline=None)
@given(
    genres=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    k=st.integers(1, 30),
    seed=st.integers(0, 1000),
)
def test_select_never_breaks_a_rule(genres: list[int], k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(genres)
    items = rng.permutation(n)
    scores = rng.normal(size=n).astype(np.float32)
    blocked = rng.choice(n, size=n // 4, replace=False)
    region = rng.random(n) > 0.2
    picked = select(
        items,
        scores,
        blocked=blocked,
        region_mask=region,
        first_genre=np.asarray(genres),
        k=k,
    )
    chosen = items[picked]
    assert len(chosen) <= k and len(set(chosen.tolist())) == len(chosen)
    assert not set(chosen.tolist()) & set(blocked.tolist())
    assert region[chosen].all()
    counts = np.bincount(np.asarray(genres)[chosen], minlength=4)
    assert counts.max(initial=0) <= math.ceil(k / 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 300), max_size=60),
    st.lists(st.integers(0, 300), max_size=60),
)
def test_allowed_matches_isin_and_leaves_no_trace(items: list[int], blocked: list[int]) -> None:
    """The scratch-flag implementation agrees with np.isin, call after call (the scratch
    is reset, so one request's blocked items never leak into the next)."""
    item_arr, blocked_arr = np.asarray(items, np.int32), np.asarray(blocked, np.int32)
    expected = ~np.isin(item_arr, blocked_arr)
    assert allowed(item_arr, blocked_arr, None).tolist() == expected.tolist()
    assert allowed(item_arr, np.empty(0, np.int32), None).all()


def _select_reference(items: np.ndarray, scores: np.ndarray, blocked: np.ndarray,
                      genres: np.ndarray, k: int, n_primary: int) -> list[int]:
    """The rules spelled out plainly: rank every allowed primary item, append the allowed
    top-up, keep first occurrences, take greedily under the genre cap."""
    allowed_pos = [p for p in range(len(items)) if items[p] not in set(blocked.tolist())]
    primary = sorted((p for p in allowed_pos if p < n_primary), key=lambda p: -scores[p])
    order = primary + [p for p in allowed_pos if p >= n_primary]
    seen: set[int] = set()
    counts: dict[int, int] = {}
    picked: list[int] = []
    for p in order:
        item = int(items[p])
        if item in seen:
            continue
        seen.add(item)
        genre = int(genres[item])
        if counts.get(genre, 0) >= genre_cap(k):
            continue
        counts[genre] = counts.get(genre, 0) + 1
        picked.append(p)
        if len(picked) == k:
            break
    return picked


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 400),
    n_topup=st.integers(0, 50),
    k=st.integers(1, 40),
    n_genres=st.integers(1, 6),
    distinct_scores=st.integers(1, 1000),
    seed=st.integers(0, 10_000),
)
def test_select_prefix_fast_path_equals_the_full_ranking(
    n: int, n_topup: int, k: int, n_genres: int, distinct_scores: int, seed: int
) -> None:
    """Ties (few distinct scores), duplicates, blocked items and tight genre caps: the row
    is exactly the one the plain full ranking gives."""
    rng = np.random.default_rng(seed)
    catalogue = 2 * (n + n_topup)
    items = rng.integers(0, catalogue, size=n + n_topup)
    scores = rng.integers(0, distinct_scores, size=n + n_topup).astype(np.float32)
    genres = rng.integers(0, n_genres, size=catalogue)
    blocked = rng.choice(catalogue, size=catalogue // 5, replace=False)
    picked = select(items, scores, blocked=blocked, region_mask=None, first_genre=genres,
                    k=k, n_primary=n)
    assert picked.tolist() == _select_reference(items, scores, blocked, genres, k, n)
