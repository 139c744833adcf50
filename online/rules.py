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
    # Stable sort keeps the input order among ties (rank order for precomputed lists).
    head = head[np.argsort(-scores[head], kind="stable")]
    order = np.concatenate([head, np.flatnonzero(keep[n_primary:]) + n_primary])
    if not len(order):
        return order.astype(np.int64)
    _, first = np.unique(items[order], return_index=True)
    order = order[np.sort(first)]
    return order[diversify(np.arange(len(order)), first_genre[items[order]], k, cap)]
