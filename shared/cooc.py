"""Item-item co-occurrence: the neighbour table as CSR, and the one scoring of a user's
recent items against it. numpy only.

The neighbour table (batch: `candidates/<variant>/neighbors.parquet`; bundle:
features/neighbor_*.npy) lists, for each item, its top co-occurring items by cosine.
`neighbor_csr` turns its rows into CSR, each item's neighbours by similarity descending
(neighbour id ascending on ties), spanning the whole catalogue.

`cooc_scores` is what both users of the table compute, for the recent items r_1..r_m of
a user (newest first, position p = 1 for the newest):
  total(c) = sum over p of sim(r_p, c) / log2(p + 1)   (the co-occurrence candidate
             source's score and the re-ranker's cooc_sum feature)
  best(c)  = max over p of sim(r_p, c)                  (cooc_max)
  hits(c)  = number of recent items listing c            (cooc_hits = hits / m)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeighborCSR:
    indptr: np.ndarray  # int64 [n_items + 1]
    indices: np.ndarray  # int32 [nnz], neighbour item_idx
    sims: np.ndarray  # float32 [nnz], cosine

    @property
    def n_items(self) -> int:
        return int(self.indptr.size - 1)


def neighbor_csr(item_idx: np.ndarray, neighbor_idx: np.ndarray, sims: np.ndarray,
                 n_items: int) -> NeighborCSR:
    """CSR from (item, neighbour, sim) rows in any order; spans max(n_items, last item + 1)
    items, those without neighbours included."""
    item_idx = np.asarray(item_idx, dtype=np.int64)
    sims = np.asarray(sims, dtype=np.float32)
    neighbor_idx = np.asarray(neighbor_idx, dtype=np.int64)
    order = np.lexsort((neighbor_idx, -sims, item_idx))
    n_items = max(n_items, int(item_idx.max()) + 1 if item_idx.size else 0)
    counts = np.bincount(item_idx, minlength=n_items)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return NeighborCSR(indptr, neighbor_idx[order].astype(np.int32), sims[order])


@dataclass(frozen=True)
class CoocScores:
    """Over the distinct items some recent item lists as a neighbour."""

    items: np.ndarray  # int64, ascending
    total: np.ndarray  # float64: sum of sim / log2(position + 1)
    best: np.ndarray  # float64: largest sim
    hits: np.ndarray  # int64: how many recent items list the item

    def at(self, items: np.ndarray) -> np.ndarray:
        """float64 [len(items), 3]: total, best, hits of these items (0 where not listed)."""
        items = np.asarray(items, dtype=np.int64)
        out = np.zeros((items.size, 3), dtype=np.float64)
        if self.items.size == 0 or items.size == 0:
            return out
        where = np.searchsorted(self.items, items)
        found = (where < self.items.size) & (self.items[np.minimum(where, self.items.size - 1)] == items)
        at = where[found]
        out[found] = np.stack([self.total[at], self.best[at], self.hits[at]], axis=1)
        return out


def cooc_scores(indptr: np.ndarray, indices: np.ndarray, sims: np.ndarray,
                recent: np.ndarray) -> CoocScores:
    """recent: item_idx newest first, every one inside the table (0 <= r < len(indptr) - 1)."""
    recent = np.asarray(recent, dtype=np.int64)
    starts = np.asarray(indptr[recent], dtype=np.int64)
    lengths = np.asarray(indptr[recent + 1], dtype=np.int64) - starts
    total_len = int(lengths.sum())
    if total_len == 0:
        empty = np.zeros(0, dtype=np.float64)
        return CoocScores(np.zeros(0, np.int64), empty, empty, np.zeros(0, np.int64))
    # Flat positions of every neighbour of every recent item, without a Python loop.
    rows = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total_len)
    position = np.repeat(np.arange(1, recent.size + 1, dtype=np.float64), lengths)
    sim = np.asarray(sims[rows], dtype=np.float64)
    items, inverse = np.unique(np.asarray(indices[rows], dtype=np.int64), return_inverse=True)
    total = np.bincount(inverse, weights=sim / np.log2(position + 1.0), minlength=items.size)
    best = np.zeros(items.size, dtype=np.float64)
    np.maximum.at(best, inverse, sim)
    hits = np.bincount(inverse, minlength=items.size)
    return CoocScores(items, total, best, hits)
