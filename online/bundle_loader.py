"""Load one published bundle into the one object the request path reads: `LoadedBundle`.

`load_bundle` verifies and reads the bundle (shared.bundle_reader: every file, the arrays
memory-mapped so all workers share one copy in the page cache), opens its FAISS index,
builds its scorer (the ONNX re-ranker, or ALS when it ships none or an unusable one) and its
caches. The object is complete when it is returned and never changes: a reload builds a new
one, and two bundles served side by side are two objects.

Everything here runs inside a gunicorn worker (after the fork): FAISS and, through
scoring.load_scorer, onnxruntime are imported only then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from online.cache import LRUCache
from online.scoring import Scorer, load_scorer
from shared import bundle_layout as layout
from shared.bundle_reader import BundleData, read_bundle
from shared.errors import BundleError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Neighbours:
    items: np.ndarray  # int32 item_idx, best first
    scores: np.ndarray  # float32


@dataclass(frozen=True, eq=False)
class BundleCaches:
    """What a bundle's requests compute once: each entry is a pure function of the bundle."""

    ann_user: LRUCache[Neighbours]  # (user_idx, k) -> the user's ANN answer
    ann_item: LRUCache[Neighbours]  # (item_idx, k) -> the item's neighbours
    # A user's re-ranked candidates for one request context: everything before the rules
    # is a pure function of (bundle, user, recent items, region, device).
    scored: LRUCache[tuple[np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def sized(cls, size: int, scored_size: int) -> BundleCaches:
        return cls(
            LRUCache("ann_user", size), LRUCache("ann_item", size),
            LRUCache("scored", scored_size),
        )  # fmt: skip


@dataclass(frozen=True, eq=False, kw_only=True)
class LoadedBundle(BundleData):
    """A bundle as a worker serves it: its data and per-user lookups (BundleData), the FAISS
    index over its item factors, its scorer and its caches."""

    index: Any  # faiss.Index
    scorer: Scorer
    # Why the bundle's ranker is not used ("ranker_unusable: ..."), None when it is or when
    # the bundle ships none; the store counts it (recsys_errors_total{kind=...}).
    scorer_fallback: str | None
    caches: BundleCaches


def load_bundle(
    path: Path,
    verify_checksums: bool = True,
    cache_size: int = 50_000,
    scored_cache_size: int = 10_000,
) -> LoadedBundle:
    """Verify and load a run directory; raise BundleError for anything unusable."""
    import faiss  # after the fork only: see PITFALLS (FAISS + fork)

    started = time.perf_counter()
    data = read_bundle(path, verify_checksums=verify_checksums)
    try:
        index = faiss.read_index(str(path / layout.INDEX))
    except (OSError, RuntimeError) as exc:
        raise BundleError(f"bundle {data.run_id}: unreadable index ({exc})") from exc
    _check_index(data, index)
    scorer, fallback = load_scorer(data)
    bundle = LoadedBundle(
        **{f.name: getattr(data, f.name) for f in fields(BundleData)},
        index=index,
        scorer=scorer,
        scorer_fallback=fallback,
        caches=BundleCaches.sized(cache_size, scored_cache_size),
    )
    log.info(
        "bundle loaded",
        extra={"run_id": bundle.run_id, "seconds": round(time.perf_counter() - started, 3)},
    )
    return bundle


def _check_index(data: BundleData, index: Any) -> None:
    """Refuse an index that disagrees with the factors, then run one real ANN query."""
    dim = data.item_factors.shape[1] if data.item_factors.ndim == 2 else -1
    if index.d != dim:
        raise BundleError(f"bundle {data.run_id}: index dim {index.d} != factors dim {dim}")
    if data.n_items:
        query = np.ascontiguousarray(data.item_factors[:1], dtype=np.float32)
        _, found = index.search(query, 1)
        if found.shape != (1, 1) or not 0 <= int(found[0, 0]) < data.n_items:
            raise BundleError(f"bundle {data.run_id}: smoke query returned {found.tolist()}")
