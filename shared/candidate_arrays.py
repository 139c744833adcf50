"""The bundle's candidate table as memory-mappable arrays, per user (CSR over user_idx).

The re-ranker's features include the score and rank each batch source (see
shared.sources.SOURCES) gave a candidate. The service looks them up per request, so it
needs them indexed by user. candidates.parquet holds them too, for analysts, but loading it
means decoding and sorting the whole table in every worker: at 20M events that is 126M
rows, 42 s and a 12 GB peak per worker. Publish therefore also writes them as .npy arrays, already in
user order, which every worker memory-maps: one copy in the page cache for all workers,
and a user's rows are read only when that user is scored.

Files (next to candidates.parquet in the bundle; names in shared/bundle_layout.py):
  candidate_indptr.npy  int64 [n_users + 1]  rows of user u: indptr[u]:indptr[u + 1]
  candidate_items.npy   int32 [n]            item_idx, strictly increasing within a user
  candidate_scores.npy  float32 [n, len(SOURCES)]  score per source, NaN where absent
  candidate_ranks.npy   float32 [n, len(SOURCES)]  rank per source (1 = best), NaN where absent

Writing is a stream: the table arrives in chunks (row groups of a Spark output) whose rows
are grouped by user in any order, and each user's rows arrive sorted by item. A first pass
counts rows per user; the writer then places each chunk's rows at their user's position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared import bundle_layout as layout
from shared.errors import BundleError
from shared.sources import RANK_COLUMNS, SCORE_COLUMNS, SOURCES, column_map

COLUMNS = ("user_idx", "item_idx", *SCORE_COLUMNS, *RANK_COLUMNS)


def _float_matrix(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """[rows, len(columns)] float32, nulls as NaN."""
    out = [
        pc.fill_null(table.column(c).cast(pa.float64()), np.nan).to_numpy().astype(np.float32)
        for c in columns
    ]
    return np.stack(out, axis=1)


def rows_per_user(user_columns: Iterable[np.ndarray], n_users: int) -> np.ndarray:
    """int64 row counts per user_idx (at least n_users of them): the first pass, over the
    user_idx column only."""
    counts = np.zeros(n_users, dtype=np.int64)
    for users in user_columns:
        users = np.asarray(users, dtype=np.int64)
        if len(users) and users.min() < 0:
            raise ValueError("candidate user_idx below 0")
        chunk = np.bincount(users, minlength=len(counts))
        if len(chunk) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(chunk) - len(counts), np.int64)])
        counts += chunk
    return counts


class CandidateArrayWriter:
    """Places chunks of the candidate table at their users' rows; `close` checks the result."""

    def __init__(self, target: Path, counts: np.ndarray) -> None:
        self.target = target
        self.indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        self.filled = np.zeros(len(counts), dtype=np.int64)
        n, width = int(self.indptr[-1]), len(SOURCES)
        open_memmap = np.lib.format.open_memmap
        self.items = open_memmap(target / layout.CANDIDATE_ITEMS, mode="w+", dtype=np.int32, shape=(n,))
        self.scores = open_memmap(
            target / layout.CANDIDATE_SCORES, mode="w+", dtype=np.float32, shape=(n, width)
        )
        self.ranks = open_memmap(target / layout.CANDIDATE_RANKS, mode="w+", dtype=np.float32, shape=(n, width))

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        users = table.column("user_idx").to_numpy().astype(np.int64)
        if users.min() < 0 or users.max() >= len(self.filled):
            raise ValueError("candidate chunk holds a user_idx the first pass did not count")
        order = np.argsort(users, kind="stable")  # keeps each user's item order
        sorted_users = users[order]
        within = np.arange(len(users)) - np.searchsorted(sorted_users, sorted_users, "left")
        positions = np.empty(len(users), dtype=np.int64)
        positions[order] = self.indptr[sorted_users] + self.filled[sorted_users] + within
        self.filled += np.bincount(users, minlength=len(self.filled))
        if (self.filled > np.diff(self.indptr)).any():
            raise ValueError("candidate chunks hold more rows than the first pass counted")
        self.items[positions] = table.column("item_idx").to_numpy().astype(np.int32)
        self.scores[positions] = _float_matrix(table, SCORE_COLUMNS)
        self.ranks[positions] = _float_matrix(table, RANK_COLUMNS)

    def close(self, check_chunk: int = 1 << 24) -> None:
        """Flush, write indptr, and refuse rows that are missing or not item-sorted per user:
        the service's lookup is a binary search within each user's rows."""
        if not np.array_equal(self.filled, np.diff(self.indptr)):
            raise ValueError("candidate chunks hold fewer rows than the first pass counted")
        for array in (self.items, self.scores, self.ranks):
            array.flush()
        user_starts = self.indptr[1:-1]
        n = len(self.items)
        for lo in range(0, max(n - 1, 0), check_chunk):
            hi = min(lo + check_chunk + 1, n)
            steps = np.diff(self.items[lo:hi])
            bad = np.flatnonzero(steps <= 0) + lo + 1  # rows not above their predecessor
            bad = bad[~np.isin(bad, user_starts)]  # allowed where a new user begins
            if len(bad):
                user = int(np.searchsorted(self.indptr, bad[0], "right") - 1)
                raise ValueError(f"candidate rows of user_idx {user} are not sorted by item_idx")
        np.save(self.target / layout.CANDIDATE_INDPTR, self.indptr)
        del self.items, self.scores, self.ranks  # closes the memory maps


def write_candidate_arrays(table: pa.Table, target: Path, n_users: int) -> None:
    """The arrays of one in-memory candidate table (small bundles, tests)."""
    table = table.select(list(COLUMNS))
    writer = CandidateArrayWriter(
        target, rows_per_user([table.column("user_idx").to_numpy()], n_users)
    )
    writer.add(table.sort_by([("user_idx", "ascending"), ("item_idx", "ascending")]))
    writer.close()


@dataclass(frozen=True)
class CandidateArrays:
    """The memory-mapped arrays of one bundle and the per-user lookup the service needs."""

    indptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray  # [n, len(source_names)], columns in the bundle's source order
    ranks: np.ndarray
    # For a bundle published with other sources: the column of each of today's SOURCES
    # (-1 where it had none), applied per lookup so the arrays stay memory-mapped.
    columns: np.ndarray | None = None

    @classmethod
    def load(cls, bundle_dir: Path, source_names: tuple[str, ...] = SOURCES) -> CandidateArrays:
        """source_names: the bundle's own source order (rec_sources.json)."""
        try:
            arrays = [np.load(bundle_dir / name, mmap_mode="r") for name in layout.CANDIDATE_FILES]
        except (OSError, ValueError) as exc:
            raise BundleError(f"candidate arrays unreadable: {exc}") from exc
        indptr, items, scores, ranks = arrays
        n, width = len(items), len(source_names)
        if (
            indptr.ndim != 1 or len(indptr) < 1 or int(indptr[-1]) != n
            or scores.shape != (n, width) or ranks.shape != (n, width)
        ):  # fmt: skip
            raise BundleError(
                f"candidate arrays disagree: indptr ends at {int(indptr[-1]) if len(indptr) else None}, "
                f"items {items.shape}, scores {scores.shape}, ranks {ranks.shape}"
            )
        return cls(indptr, items, scores, ranks, column_map(source_names))

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lookup(
        self, user_idx: int | None, items: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """[len(items), len(SOURCES)] batch scores and ranks of these items for this user, NaN
        where no source proposed the item; (None, None) for a user the batch never saw."""
        if user_idx is None or not 0 <= user_idx < self.n_users:
            return None, None
        lo, hi = int(self.indptr[user_idx]), int(self.indptr[user_idx + 1])
        stored = np.asarray(self.items[lo:hi])
        items = np.asarray(items)
        pos = np.searchsorted(stored, items)
        found = pos < len(stored)
        found[found] = stored[pos[found]] == items[found]
        scores = np.full((len(items), len(SOURCES)), np.nan, dtype=np.float32)
        ranks = np.full_like(scores, np.nan)
        if found.any():
            rows = lo + pos[found]
            if self.columns is None:
                scores[found] = self.scores[rows]
                ranks[found] = self.ranks[rows]
            else:  # an older bundle: today's columns by name, NaN for a source it lacked
                present = self.columns >= 0
                sel = np.ix_(np.flatnonzero(found), np.flatnonzero(present))
                scores[sel] = self.scores[rows][:, self.columns[present]]
                ranks[sel] = self.ranks[rows][:, self.columns[present]]
        return scores, ranks
