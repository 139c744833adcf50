"""Load one published bundle into the in-memory arrays the request path reads.

Everything here runs inside a gunicorn worker (after the fork): it opens the FAISS index and,
through scoring.load_scorer, maybe an ONNX session. Large float arrays are memory-mapped so
all workers share one copy in the page cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from online.cache import LRUCache
from shared.bundle import GLOBAL_SEGMENT, BundleManifest, verify_bundle
from shared.errors import BundleError
from shared.recommendation_arrays import RecommendationArrays

log = logging.getLogger(__name__)


@dataclass
class Neighbours:
    items: np.ndarray  # int32 item_idx, best first
    scores: np.ndarray  # float32


@dataclass
class LoadedBundle:
    run_id: str
    path: Path
    manifest: BundleManifest
    item_ids: np.ndarray  # object [n_items]: item_idx -> item_id
    item_index: dict[str, int]
    titles: list[str]
    first_genre: np.ndarray  # int32 [n_items], code of the item's first genre
    available_everywhere: np.ndarray  # bool [n_items]
    region_masks: dict[str, np.ndarray]  # region -> bool [n_items]
    user_index: dict[str, int]
    user_region: list[str | None]
    item_factors: np.ndarray
    user_factors: np.ndarray
    index: Any  # faiss.Index
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    rec_indptr: np.ndarray  # CSR over user_idx of the precomputed lists, rank order (mmap)
    rec_items: np.ndarray
    rec_scores: np.ndarray
    rec_sources: np.ndarray  # uint32 bitmask over source_names
    source_names: list[str]
    popular: dict[str, Neighbours]
    scorer: Any = None  # online.scoring.Scorer, set by the store after loading
    caches: dict[str, LRUCache[Any]] = field(default_factory=dict)
    source_names_memo: dict[int, list[str]] = field(default_factory=dict)  # read-only lists

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def region_mask(self, region: str | None) -> np.ndarray | None:
        """Items available in region; None means no restriction is known (no region)."""
        if region is None:
            return None
        # A region no item lists sees only the unrestricted items.
        return self.region_masks.get(region, self.available_everywhere)

    def seen(self, user_idx: int) -> np.ndarray:
        return np.asarray(
            self.seen_indices[self.seen_indptr[user_idx] : self.seen_indptr[user_idx + 1]]
        )

    def sources_of(self, mask: int) -> list[str]:
        return [name for bit, name in enumerate(self.source_names) if mask & (1 << bit)]


def _read(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise BundleError(f"{path.name}: unreadable ({exc})") from exc


def _load_items(path: Path) -> dict[str, Any]:
    table = _read(path, ["item_idx", "item_id", "title", "genres", "available_regions"])
    idx = table.column("item_idx").to_numpy().astype(np.int64)
    n = int(idx.max()) + 1 if len(idx) else 0
    item_ids = np.empty(n, dtype=object)
    item_ids[idx] = table.column("item_id").cast(pa.string()).to_pylist()
    titles = [""] * n
    for i, title in zip(idx, table.column("title").to_pylist(), strict=True):
        titles[i] = title or ""
    genre_codes: dict[str, int] = {}
    first_genre = np.zeros(n, dtype=np.int32)
    for i, genres in zip(idx, table.column("genres").to_pylist(), strict=True):
        first = (genres or "").split("|", 1)[0]
        first_genre[i] = genre_codes.setdefault(first, len(genre_codes))
    everywhere = np.zeros(n, dtype=bool)
    by_region: dict[str, list[int]] = {}
    for i, regions in zip(idx, table.column("available_regions").to_pylist(), strict=True):
        if not regions:  # null: no restriction
            everywhere[i] = True
            continue
        for region in regions.split("|"):
            by_region.setdefault(region, []).append(int(i))
    masks = {}
    for region, members in by_region.items():
        mask = everywhere.copy()
        mask[members] = True
        masks[region] = mask
    item_index = {item_id: int(i) for i, item_id in enumerate(item_ids) if item_id is not None}
    return {
        "item_ids": item_ids,
        "item_index": item_index,
        "titles": titles,
        "first_genre": first_genre,
        "available_everywhere": everywhere,
        "region_masks": masks,
    }


def _load_users(path: Path) -> dict[str, Any]:
    table = _read(path, ["user_idx", "user_id", "region"])
    idx = table.column("user_idx").to_numpy().astype(np.int64)
    n = int(idx.max()) + 1 if len(idx) else 0
    regions: list[str | None] = [None] * n
    for i, region in zip(idx, table.column("region").to_pylist(), strict=True):
        regions[i] = region
    ids = table.column("user_id").cast(pa.string()).to_pylist()
    return {"user_index": dict(zip(ids, map(int, idx), strict=True)), "user_region": regions}


def _load_recommendations(bundle_dir: Path, n_users: int) -> dict[str, Any]:
    lists = RecommendationArrays.load(bundle_dir, n_users)
    return {
        "rec_indptr": lists.indptr,
        "rec_items": lists.items,
        "rec_scores": lists.scores,
        "rec_sources": lists.sources,
        "source_names": lists.source_names,
    }


def _load_popular(path: Path) -> dict[str, Neighbours]:
    table = _read(path, ["segment", "rank", "item_idx", "score"]).sort_by(
        [("segment", "ascending"), ("rank", "ascending")]
    )
    out: dict[str, Neighbours] = {}
    segments = np.asarray(table.column("segment").to_pylist(), dtype=object)
    items = table.column("item_idx").to_numpy().astype(np.int32)
    scores = table.column("score").to_numpy().astype(np.float32)
    for segment in np.unique(segments):
        sel = segments == segment
        out[str(segment)] = Neighbours(items[sel], scores[sel])
    if GLOBAL_SEGMENT not in out:
        raise BundleError(f"popular.parquet has no {GLOBAL_SEGMENT} segment")
    return out


def load_bundle(path: Path, verify_checksums: bool = True) -> LoadedBundle:
    """Verify and load a run directory; raise BundleError for anything unusable."""
    import faiss  # after the fork only: see PITFALLS (FAISS + fork)

    started = time.perf_counter()
    manifest = verify_bundle(path, check_checksums=verify_checksums)
    items = _load_items(path / "items.parquet")
    users = _load_users(path / "users.parquet")
    try:
        item_factors = np.asarray(np.load(path / "item_factors.npy", mmap_mode="r"))
        user_factors = np.asarray(np.load(path / "user_factors.npy", mmap_mode="r"))
        seen_indptr = np.asarray(np.load(path / "seen_indptr.npy", mmap_mode="r"))
        seen_indices = np.asarray(np.load(path / "seen_indices.npy", mmap_mode="r"))
        index = faiss.read_index(str(path / "index.faiss"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"bundle {manifest.run_id}: unreadable array or index ({exc})") from exc
    n_users = len(users["user_region"])
    bundle = LoadedBundle(
        run_id=manifest.run_id,
        path=path,
        manifest=manifest,
        **items,
        **users,
        item_factors=item_factors,
        user_factors=user_factors,
        index=index,
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        **_load_recommendations(path, n_users),
        popular=_load_popular(path / "popular.parquet"),
    )
    check_shapes(bundle)
    log.info(
        "bundle loaded",
        extra={"run_id": bundle.run_id, "seconds": round(time.perf_counter() - started, 3)},
    )
    return bundle


def check_shapes(bundle: LoadedBundle) -> None:
    """Refuse arrays that disagree with each other, then run one real ANN query."""
    run, n_items = bundle.run_id, bundle.n_items
    dim = bundle.item_factors.shape[1] if bundle.item_factors.ndim == 2 else -1
    problems = []
    if bundle.item_factors.shape[0] < n_items:
        problems.append(f"item_factors has {bundle.item_factors.shape[0]} rows < {n_items}")
    if bundle.user_factors.ndim != 2 or bundle.user_factors.shape[1] != dim:
        problems.append(f"user_factors shape {bundle.user_factors.shape} vs dim {dim}")
    if bundle.user_factors.shape[0] < len(bundle.user_region):
        problems.append("user_factors has fewer rows than users")
    if bundle.index.d != dim:
        problems.append(f"index dim {bundle.index.d} != factors dim {dim}")
    if len(bundle.seen_indptr) < len(bundle.user_region) + 1:
        problems.append("seen_indptr shorter than users + 1")
    if problems:
        raise BundleError(f"bundle {run}: " + "; ".join(problems))
    if n_items:
        query = np.ascontiguousarray(bundle.item_factors[:1], dtype=np.float32)
        _, found = bundle.index.search(query, 1)
        if found.shape != (1, 1) or not 0 <= int(found[0, 0]) < n_items:
            raise BundleError(f"bundle {run}: smoke query returned {found.tolist()}")
