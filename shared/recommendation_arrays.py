"""The published lists as memory-mappable arrays, per user (CSR over user_idx, rank order).

The service answers from the precomputed lists (fallback, and the batch candidates of the
full path), so it needs them indexed by user. recommendations.parquet holds them for
analysts, but decoding it in every worker (the `sources` lists above all) took 8-11 s and
a 5 GB peak per worker for the 40M rows of a 20M-event bundle. Publish therefore also writes them
as arrays that every worker memory-maps: nothing to decode, one copy in the page cache.

Files (next to recommendations.parquet in the bundle):
  rec_indptr.npy    int64 [n_users + 1]   the list of user u: indptr[u]:indptr[u + 1]
  rec_items.npy     int32 [n]             item_idx, best first
  rec_scores.npy    float32 [n]           the published score
  rec_sources.npy   uint32 [n]            bit b set = source rec_sources.json[b] proposed it
  rec_sources.json  ["ann", "cooc", ...]  the source names, at most 32
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import BundleError

INDPTR_FILE = "rec_indptr.npy"
ITEMS_FILE = "rec_items.npy"
SCORES_FILE = "rec_scores.npy"
SOURCES_FILE = "rec_sources.npy"
SOURCE_NAMES_FILE = "rec_sources.json"
FILES = (INDPTR_FILE, ITEMS_FILE, SCORES_FILE, SOURCES_FILE, SOURCE_NAMES_FILE)
MAX_SOURCES = 32  # one bit each in a uint32


def source_bitmasks(sources: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """uint32 [rows] bitmasks of a list<string> column and the names the bits stand for
    (sorted, so the same sources always get the same bits)."""
    lists = sources.combine_chunks() if isinstance(sources, pa.ChunkedArray) else sources
    flat = pc.list_flatten(lists)
    names = sorted({str(s) for s in pc.unique(flat).to_pylist() if s is not None})
    if len(names) > MAX_SOURCES:
        raise ValueError(f"{len(names)} source tags, at most {MAX_SOURCES}")
    codes = pc.index_in(flat, value_set=pa.array(names, pa.string()))
    parents = pc.list_parent_indices(lists).to_numpy()
    masks = np.zeros(len(lists), dtype=np.uint32)
    valid = codes.is_valid().to_numpy(zero_copy_only=False)
    bits = np.left_shift(
        np.uint32(1), codes.to_numpy(zero_copy_only=False)[valid].astype(np.uint32)
    )
    np.bitwise_or.at(masks, parents[valid], bits)
    return masks, names


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
    masks, names = source_bitmasks(table.column("sources"))
    np.save(target / INDPTR_FILE, indptr)
    np.save(target / ITEMS_FILE, table.column("item_idx").to_numpy().astype(np.int32))
    np.save(target / SCORES_FILE, table.column("score").to_numpy().astype(np.float32))
    np.save(target / SOURCES_FILE, masks)
    (target / SOURCE_NAMES_FILE).write_text(json.dumps(names))


@dataclass(frozen=True)
class RecommendationArrays:
    indptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    sources: np.ndarray
    source_names: list[str]

    @classmethod
    def load(cls, bundle_dir: Path, n_users: int) -> RecommendationArrays:
        """Memory-mapped (plain ndarray views of the maps); indptr covers at least n_users."""
        try:
            indptr, items, scores, sources = (
                np.asarray(np.load(bundle_dir / name, mmap_mode="r")) for name in FILES[:4]
            )
            names = json.loads((bundle_dir / SOURCE_NAMES_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"recommendation arrays unreadable: {exc}") from exc
        if not isinstance(names, list):
            raise BundleError(f"{SOURCE_NAMES_FILE}: expected a list of source names")
        n = len(items)
        if (
            indptr.ndim != 1 or len(indptr) < 1 or int(indptr[-1]) != n
            or scores.shape != (n,) or sources.shape != (n,)
            or len(names) > MAX_SOURCES
        ):  # fmt: skip
            raise BundleError(
                f"recommendation arrays disagree: indptr {indptr.shape}, items {items.shape}, "
                f"scores {scores.shape}, sources {sources.shape}, {len(names)} source names"
            )
        if len(indptr) < n_users + 1:  # users after the last one with a list: empty lists
            indptr = np.concatenate([indptr, np.full(n_users + 1 - len(indptr), indptr[-1])])
        return cls(indptr, items, scores, sources, [str(s) for s in names])
