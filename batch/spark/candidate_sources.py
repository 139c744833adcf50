"""The per-user candidate sources and their merge, as plain numpy over one user at a time.

Spark hands each task a batch of users with what they have seen, newest first; the
catalogue-sized tables (item neighbours, popular lists per segment) are broadcast once.
Working per user inside the task keeps the hundreds of rows each user gets out of
Spark shuffles: the co-occurrence sum, the seen filter, the top-k cuts and the merge of
the sources all happen here, and only the merged rows leave the task.

Ordering rules (the contract the rest of the pipeline and its tests rely on):
- ANN: the index's order by inner product, seen items skipped, ranks 1..k.
- co-occurrence: score = sum over the user's `cooc_score_history` newest items of
  sim(item, candidate) / log2(position + 1), position 1 = newest; seen items dropped;
  top k by score descending, item id ascending.
- EASE: score = sum of the EASE weights B[i, candidate] over the user's items i that EASE
  covers (shared/ease.py); seen items dropped; top k by score descending, item id
  ascending; a user without a covered item gets none.
- popular: the user's segment list (region, else global) in its order, seen dropped, top k.
- merge: one row per item, the sources that proposed it (alphabetical), each source's
  score and rank (absent: null), and the weighted reciprocal-rank fusion score.

The source names come from shared/sources.py, the co-occurrence scoring from
shared/cooc.py and the fusion from shared/fusion.py (docs/scoring.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.cooc import cooc_scores
from shared.ease import top_unseen
from shared.fusion import fused_scores, weight_vector
from shared.sources import SOURCES


@dataclass(frozen=True)
class SourceTables:
    """Catalogue-sized inputs shared by every user: neighbours as CSR by item (each row
    sorted by similarity), and each segment's popular list (items, scores) in rank order."""

    neighbor_indptr: np.ndarray
    neighbor_indices: np.ndarray
    neighbor_sims: np.ndarray
    popular: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SourceList:
    items: np.ndarray  # int64
    scores: np.ndarray  # float32


EMPTY = SourceList(np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass(frozen=True)
class EaseTable:
    """EASE over N covered items: their item_idx (ascending), each catalogue item's column
    (-1: not covered) and the weights B [N, N] (memory-mapped in the tasks)."""

    items: np.ndarray
    columns: np.ndarray
    weights: np.ndarray

    @classmethod
    def load(cls, weights_path: str, items_path: str, n_items: int) -> EaseTable:
        from shared.ease import column_map

        items = np.load(items_path)
        return cls(items, column_map(items, n_items), np.load(weights_path, mmap_mode="r"))


def ann_list(ids: np.ndarray, scores: np.ndarray, seen: np.ndarray, k: int) -> SourceList:
    """The index's answer minus seen items (and FAISS's -1 padding), first k."""
    keep = (ids >= 0) & ~np.isin(ids, seen)
    return SourceList(ids[keep][:k].astype(np.int64), scores[keep][:k].astype(np.float32))


def cooc_list(recent: np.ndarray, seen: np.ndarray, tables: SourceTables, k: int) -> SourceList:
    """recent: the user's distinct items, newest first, already cut to the history length."""
    if recent.size == 0:
        return EMPTY
    if recent.max() >= tables.neighbor_indptr.size - 1:
        raise ValueError(f"item {recent.max()} is outside the neighbour table "
                         f"({tables.neighbor_indptr.size - 1} items)")
    got = cooc_scores(tables.neighbor_indptr, tables.neighbor_indices, tables.neighbor_sims,
                      recent)
    if got.items.size == 0:
        return EMPTY
    items, totals = got.items, got.total
    keep = ~np.isin(items, seen)
    items, totals = items[keep], totals[keep]
    order = np.lexsort((items, -totals))[:k]
    return SourceList(items[order].astype(np.int64), totals[order].astype(np.float32))


def ease_list(seen: np.ndarray, table: EaseTable | None, k: int) -> SourceList:
    if table is None or seen.size == 0:
        return EMPTY
    known = seen[seen < table.columns.size]
    cols = table.columns[known]
    top = top_unseen(table.weights, cols[cols >= 0], k)
    if top.cols.size == 0:
        return EMPTY
    return SourceList(table.items[top.cols].astype(np.int64), top.scores.astype(np.float32))


def popular_list(segment: str, seen: np.ndarray, tables: SourceTables, k: int) -> SourceList:
    found = tables.popular.get(segment)
    if found is None:
        return EMPTY
    items, scores = found
    keep = ~np.isin(items, seen)
    return SourceList(items[keep][:k].astype(np.int64), scores[keep][:k].astype(np.float32))


@dataclass(frozen=True)
class MergedCandidates:
    """Columns over the user's distinct candidate items. A source that did not propose an
    item has rank 0 there (and score 0); Spark turns those into nulls and derives the
    `sources` list from the ranks, so no Python list per row is ever built."""

    items: np.ndarray  # int64, ascending
    scores: dict[str, np.ndarray]  # float32
    ranks: dict[str, np.ndarray]  # int32, 1-based, 0 = not proposed by this source
    fused: np.ndarray  # float32


def merge(lists: dict[str, SourceList], weights: dict[str, float]) -> MergedCandidates:
    items = np.unique(np.concatenate([lists[s].items for s in SOURCES]))
    scores: dict[str, np.ndarray] = {}
    ranks: dict[str, np.ndarray] = {}
    for source in SOURCES:
        got = lists[source]
        where = np.searchsorted(items, got.items)
        scores[source] = np.zeros(items.size, np.float32)
        ranks[source] = np.zeros(items.size, np.int32)
        scores[source][where] = got.scores
        rank = np.arange(1, got.items.size + 1, dtype=np.int32)
        ranks[source][where] = rank
    fused = fused_scores(np.stack([ranks[s] for s in SOURCES], axis=1), weight_vector(weights))
    return MergedCandidates(items, scores, ranks, fused.astype(np.float32))


def sources_of(merged: MergedCandidates) -> list[list[str]]:
    """The sources behind each item, alphabetical (what the Spark side derives)."""
    return [[s for s in SOURCES if merged.ranks[s][i] > 0] for i in range(merged.items.size)]
