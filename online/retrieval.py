"""Candidate retrieval: precomputed list ∪ ANN(user vector) ∪ ANN(recent items).

Each candidate carries a bitmask of the sources that proposed it (shared.sources: the
batch sources of the precomputed list, PRECOMPUTED, ANN, RECENT), so the answer can say
where every item came from without building Python sets per candidate.
"""

from __future__ import annotations

import numpy as np

from online.bundle_loader import LoadedBundle, Neighbours
from shared.sources import ANN, RECENT


def search(bundle: LoadedBundle, vector: np.ndarray, k: int) -> Neighbours:
    xq = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
    dist, ids = bundle.index.search(xq, min(k, bundle.index.ntotal))
    valid = ids[0] >= 0  # FAISS pads with -1 when fewer than k vectors match
    return Neighbours(ids[0][valid].astype(np.int32), dist[0][valid].astype(np.float32))


def user_neighbours(bundle: LoadedBundle, user_idx: int, k: int) -> Neighbours:
    # A user's vector is fixed for the life of the bundle, so its ANN answer is too.
    return bundle.caches.ann_user.get_or_compute(
        (user_idx, k), lambda: search(bundle, np.asarray(bundle.user_factors[user_idx]), k)
    )


def item_neighbours(bundle: LoadedBundle, item_idx: int, k: int) -> Neighbours:
    """Nearest items to item_idx, itself excluded (shared by /similar and recent items)."""

    def compute() -> Neighbours:
        found = search(bundle, np.asarray(bundle.item_factors[item_idx]), k + 1)
        keep = found.items != item_idx
        return Neighbours(found.items[keep][:k], found.scores[keep][:k])

    return bundle.caches.ann_item.get_or_compute((item_idx, k), compute)


def merge(parts: list[tuple[np.ndarray, np.ndarray]], limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of (items, masks) parts, masks OR-ed per item, first parts kept when over limit."""
    if not parts:
        return np.empty(0, np.int32), np.empty(0, np.uint32)
    items = np.concatenate([p[0] for p in parts]).astype(np.int32, copy=False)
    masks = np.concatenate([p[1] for p in parts]).astype(np.uint32, copy=False)
    uniq, first, inverse = np.unique(items, return_index=True, return_inverse=True)
    merged = np.zeros(len(uniq), dtype=np.uint32)
    np.bitwise_or.at(merged, inverse, masks)
    order = np.argsort(first, kind="stable")[:limit]  # earlier parts are higher priority
    return uniq[order], merged[order]


def candidates(
    bundle: LoadedBundle,
    user_idx: int | None,
    recent: np.ndarray,
    *,
    ann_k: int,
    recent_k: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate item_idx and source bitmasks for one request."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if user_idx is not None:
        listed = bundle.precomputed_list(user_idx)
        if listed is not None:
            parts.append((listed.items, listed.sources))
        found = user_neighbours(bundle, user_idx, ann_k)
        parts.append((found.items, np.full(len(found.items), ANN, dtype=np.uint32)))
    for item_idx in recent.tolist():
        found = item_neighbours(bundle, item_idx, recent_k)
        parts.append((found.items, np.full(len(found.items), RECENT, dtype=np.uint32)))
    return merge(parts, limit)
