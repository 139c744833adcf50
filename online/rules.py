"""Business rules applied to every answer, whichever path produced it.

Pure numpy, no Flask: drop what the user has seen, asked to exclude or cannot watch in their
region, then pick the top k with a diversity cap so one genre cannot fill the row.
"""

from __future__ import annotations

import math
import threading

import numpy as np

# Per-thread scratch flags over the catalogue: marking the blocked items, reading the
# candidates and unmarking costs O(blocked + candidates), ~10x less than np.isin's sort.
_scratch = threading.local()


def _flags(size: int) -> np.ndarray:
    flags: np.ndarray | None = getattr(_scratch, "flags", None)
    if flags is None or len(flags) < size:
        flags = np.zeros(size, dtype=bool)
        _scratch.flags = flags
    return flags


def genre_cap(k: int) -> int:
    """At most ceil(k/2) items may share a first genre."""
    return max(1, math.ceil(k / 2))


def allowed(items: np.ndarray, blocked: np.ndarray, region_mask: np.ndarray | None) -> np.ndarray:
    """Boolean mask over items: not blocked and available in the region (None: anywhere)."""
    if len(blocked) and len(items):
        flags = _flags(int(max(items.max(), blocked.max())) + 1)
        flags[blocked] = True
        keep = ~flags[items]
        flags[blocked] = False  # leave the scratch clean for the next request
    else:
        keep = np.ones(len(items), dtype=bool)
    if region_mask is not None:
        keep &= region_mask[items]
    return keep


def diversify(order: np.ndarray, genres: np.ndarray, k: int, cap: int | None = None) -> np.ndarray:
    """Positions from `order` (best first), at most `cap` per genre, at most k of them.

    Greedy in score order: an item is skipped only because its genre already has `cap`
    items above it, so the result is the best row that satisfies the cap.
    """
    cap = genre_cap(k) if cap is None else cap
    counts: dict[int, int] = {}
    picked: list[int] = []
    for pos, genre in zip(order.tolist(), genres[order].tolist(), strict=True):
        if counts.get(genre, 0) >= cap:
            continue
        counts[genre] = counts.get(genre, 0) + 1
        picked.append(pos)
        if len(picked) == k:
            break
    return np.asarray(picked, dtype=np.int64)


def _best_first_prefix(head: np.ndarray, scores: np.ndarray, size: int) -> np.ndarray:
    """The first >= `size` entries of `head` stably sorted by descending score, without
    sorting the rest: every position scoring at least the size-th best is kept (ties
    included, in input order), so the result is exactly a prefix of the full stable sort."""
    negated = -scores[head]
    threshold = np.partition(negated, size - 1)[size - 1]
    kept = head[negated <= threshold]
    return kept[np.argsort(-scores[kept], kind="stable")]


def select(
    items: np.ndarray,
    scores: np.ndarray,
    *,
    blocked: np.ndarray,
    region_mask: np.ndarray | None,
    first_genre: np.ndarray,
    k: int,
    n_primary: int | None = None,
    cap: int | None = None,
) -> np.ndarray:
    """Positions into items of the final row, best first, after every rule.

    items[:n_primary] are ranked by score; items[n_primary:] are a top-up list (popular) used
    in their given order only when the primary ones cannot fill k. Duplicates keep the first.
    """
    n_primary = len(items) if n_primary is None else n_primary
    keep = allowed(items, blocked, region_mask)
    head = np.flatnonzero(keep[:n_primary])
    # Fast path: a few hundred candidates, k of them shown. Deduplicating and diversifying
    # a prefix of the ranking gives the same row as doing it on all of it whenever the
    # prefix fills k, so only a prefix is sorted and walked; else the full ranking is used.
    prefix = _PREFIX_FACTOR * k
    if len(head) > prefix:
        ranked = _best_first_prefix(head, scores, prefix)
        picked = _dedupe_and_diversify(items, ranked, first_genre, k, cap)
        if len(picked) == k:
            return picked
    # Stable sort keeps the input order among ties (rank order for precomputed lists).
    head = head[np.argsort(-scores[head], kind="stable")]
    order = np.concatenate([head, np.flatnonzero(keep[n_primary:]) + n_primary])
    return _dedupe_and_diversify(items, order, first_genre, k, cap)


_PREFIX_FACTOR = 4  # prefix length per requested item; deep enough for the genre cap


def _dedupe_and_diversify(
    items: np.ndarray, order: np.ndarray, first_genre: np.ndarray, k: int, cap: int | None
) -> np.ndarray:
    if not len(order):
        return order.astype(np.int64)
    _, first = np.unique(items[order], return_index=True)
    order = order[np.sort(first)]
    return order[diversify(np.arange(len(order)), first_genre[items[order]], k, cap)]
