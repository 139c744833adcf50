"""The published lists as memory-mappable arrays, per user (CSR over user_idx, rank order).

The service answers from the precomputed lists (fallback, and the batch candidates of the
full path), so it needs them indexed by user. recommendations.parquet holds them for
analysts, but decoding it in every worker (the `sources` lists above all) took 8-11 s and
a 5 GB peak per worker for the 40M rows of a 20M-event bundle. Publish therefore also writes them
as arrays that every worker memory-maps: nothing to decode, one copy in the page cache.

Files (next to recommendations.parquet in the bundle; names in shared/bundle_layout.py):
  rec_indptr.npy    int64 [n_users + 1]   the list of user u: indptr[u]:indptr[u + 1]
  rec_items.npy     int32 [n]             item_idx, best first
  rec_scores.npy    float32 [n]           the published score
  rec_sources.npy   uint32 [n]            source bitmask, bit b = shared.sources.SOURCES[b]
  rec_sources.json  ["ann", "cooc", ...]  the names of those bits (shared.sources.SOURCES)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared import bundle_layout as layout
from shared.errors import BundleError
from shared.sources import SOURCES, bit_remap


def source_bitmasks(sources: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """uint32 [rows] bitmasks of a list<string> column, bit b = SOURCES[b] (shared.sources);
    null tags are ignored, a tag that is no batch source is refused."""
    lists = sources.combine_chunks() if isinstance(sources, pa.ChunkedArray) else sources
    flat = pc.list_flatten(lists)
    codes = pc.index_in(flat, value_set=pa.array(SOURCES, pa.string()))
    unknown = pc.and_(flat.is_valid(), codes.is_null())
    if pc.any(unknown).as_py():
        tags = sorted(set(pc.filter(flat, unknown).to_pylist()))
        raise ValueError(f"source tags {tags} are not batch sources {SOURCES}")
    parents = pc.list_parent_indices(lists).to_numpy()
    masks = np.zeros(len(lists), dtype=np.uint32)
    valid = codes.is_valid().to_numpy(zero_copy_only=False)
    bits = np.left_shift(
        np.uint32(1), codes.to_numpy(zero_copy_only=False)[valid].astype(np.uint32)
    )
    np.bitwise_or.at(masks, parents[valid], bits)
    return masks


def write_recommendation_arrays(table: pa.Table, target: Path, n_users: int) -> None:
    """Arrays of the published lists: `table` has user_idx, rank, item_idx, score, sources,
    sorted by (user_idx, rank)."""
    users = table.column("user_idx").to_numpy().astype(np.int64)
    if len(users) and (np.diff(users) < 0).any():
        raise ValueError("recommendations must be sorted by user_idx, then rank")
    if len(users) and users.min() < 0:
        raise ValueError("recommendation user_idx below 0")
    counts = np.bincount(users, minlength=n_users)
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    masks = source_bitmasks(table.column("sources"))
    np.save(target / layout.REC_INDPTR, indptr)
    np.save(target / layout.REC_ITEMS, table.column("item_idx").to_numpy().astype(np.int32))
    np.save(target / layout.REC_SCORES, table.column("score").to_numpy().astype(np.float32))
    np.save(target / layout.REC_SOURCES, masks)
    (target / layout.REC_SOURCE_NAMES).write_text(json.dumps(list(SOURCES)))


@dataclass(frozen=True)
class RecommendationArrays:
    indptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    sources: np.ndarray  # uint32 bitmasks as written: bit b = source_names[b]
    # The bundle's own source order (rec_sources.json; also the candidate arrays' columns)
    # and, when it is not today's SOURCES prefix, the table from its masks to today's bits.
    source_names: tuple[str, ...] = SOURCES
    bit_map: np.ndarray | None = None

    def sources_of(self, rows: slice) -> np.ndarray:
        """uint32 masks of these rows in today's bits (shared.sources)."""
        masks = self.sources[rows].astype(np.uint32)
        return masks if self.bit_map is None else self.bit_map[masks]

    @classmethod
    def load(cls, bundle_dir: Path, n_users: int) -> RecommendationArrays:
        """Memory-mapped (plain ndarray views of the maps); indptr covers at least n_users."""
        names = (layout.REC_INDPTR, layout.REC_ITEMS, layout.REC_SCORES, layout.REC_SOURCES)
        try:
            indptr, items, scores, sources = (
                np.asarray(np.load(bundle_dir / name, mmap_mode="r")) for name in names
            )
            tags = json.loads((bundle_dir / layout.REC_SOURCE_NAMES).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"recommendation arrays unreadable: {exc}") from exc
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BundleError(f"{layout.REC_SOURCE_NAMES}: expected a list of source names")
        # A bundle published when the batch had other sources (or another order) names its
        # bits here: they are translated to today's bits by name, so the service serves
        # yesterday's bundle across an upgrade that adds a source.
        try:
            remap = bit_remap(tags)
        except ValueError as exc:
            raise BundleError(
                f"{layout.REC_SOURCE_NAMES} names bits {tags}, this code knows {list(SOURCES)}: {exc}"
            ) from exc
        n = len(items)
        if (
            indptr.ndim != 1 or len(indptr) < 1 or int(indptr[-1]) != n
            or scores.shape != (n,) or sources.shape != (n,)
        ):  # fmt: skip
            raise BundleError(
                f"recommendation arrays disagree: indptr {indptr.shape}, items {items.shape}, "
                f"scores {scores.shape}, sources {sources.shape}"
            )
        if len(indptr) < n_users + 1:  # users after the last one with a list: empty lists
            indptr = np.concatenate([indptr, np.full(n_users + 1 - len(indptr), indptr[-1])])
        return cls(indptr, items, scores, sources, tuple(tags), remap)

    def user_slice(self, user_idx: int | None) -> slice | None:
        """Rows of the user's list; None for a user without one (or unknown)."""
        if user_idx is None or not 0 <= user_idx < len(self.indptr) - 1:
            return None
        lo, hi = int(self.indptr[user_idx]), int(self.indptr[user_idx + 1])
        return slice(lo, hi) if hi > lo else None
