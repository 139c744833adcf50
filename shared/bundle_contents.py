"""What a bundle's arrays must hold, checked when it is read: checksums say the files are the
ones the manifest names, not that those files make sense.

A bundle whose checksums match can still be wrong: a faulty run (or a hand-repaired bundle,
re-signed) can publish NaN factors, item ids past the catalogue or a broken CSR pointer.
Served, such a bundle answers with silently changed scores or fails on some users only.
`contents_problems` finds these; `shared.bundle_reader.read_bundle` refuses the bundle with
them, each problem naming its file:

  bundle run-7: user_factors.npy: 610 of 610 rows not finite

What is checked (the formats are in shared/bundle_layout.py and the array modules):
  * the ALS factors (item and user): every value finite;
  * every CSR pair (seen_*, rec_*, candidate_*, features/neighbor_*, features/recent_*):
    indptr one-dimensional, starting at 0, never decreasing, ending at the length of its
    indices;
  * every item id an array holds (seen, published lists, candidates, popular lists,
    neighbours, recent items) in [0, n_items); those the service answers with (published
    and popular lists) also name an item of items.parquet;
  * candidate items strictly increasing within a user (the lookup is a binary search);
  * scores: the published lists' and the popular lists' finite; the candidate arrays hold
    NaN where a source did not propose the item, so there a score and its rank are both NaN
    (absent) or both present, the score finite and the rank a finite number >= 1;
  * published source bitmasks use only the batch sources' bits;
  * the feature arrays finite, except the first/last-interaction times, where NaN means
    "never" (infinite is still refused).

numpy only, vectorised, over memory-mapped arrays: large arrays are read in blocks of about
a megabyte, so a check allocates little beyond a block and the page cache holds the data
once for every worker. Cost at the 20M-event bundle's size: bench/bundle_contents.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from shared import bundle_layout as layout
from shared.errors import BundleError

if TYPE_CHECKING:
    from shared.bundle_reader import BundleData
    from shared.features import FeatureArrays

# Elements per block: large enough that numpy's per-call overhead vanishes, small enough
# that a block and its temporaries stay in the CPU caches.
_BLOCK = 1 << 18

# How each feature array (shared.features.ARRAY_NAMES) is checked. A CSR pair is checked
# as a pair (_FEATURE_CSR); the rest by value.
FINITE = "finite"
FINITE_OR_NAN = "finite or NaN"  # NaN is meaningful (item_times/user_times: never)
CSR_PART = "csr"
FEATURE_RULES: dict[str, str] = {
    "item_stats": FINITE,
    "item_genres": FINITE,
    "user_stats": FINITE,
    "user_genres": FINITE,
    "neighbor_indptr": CSR_PART,
    "neighbor_indices": CSR_PART,
    "neighbor_sims": FINITE,
    "recent_indptr": CSR_PART,
    "recent_indices": CSR_PART,
    "item_times": FINITE_OR_NAN,
    "user_times": FINITE_OR_NAN,
    "item_buckets": FINITE,
    "bucket_edges": FINITE,
    "bucket_totals": FINITE,
}
# (indptr, indices) feature pairs; their indices are item ids.
_FEATURE_CSR = (("neighbor_indptr", "neighbor_indices"), ("recent_indptr", "recent_indices"))


def check_contents(data: BundleData) -> None:
    """Refuse (BundleError, every problem with its file) a bundle whose contents are invalid."""
    problems = contents_problems(data)
    if problems:
        raise BundleError(f"bundle {data.run_id}: " + "; ".join(problems))


def contents_problems(data: BundleData) -> list[str]:
    """Every contents problem of a read bundle, each "<file>: <what>"; empty when valid."""
    n_items = data.n_items
    named = np.array([i is not None for i in data.item_ids], dtype=bool)  # False: a gap
    served_ids = None if named.all() else named
    problems: list[str] = []
    problems += _not_finite_rows(layout.ITEM_FACTORS, data.item_factors)
    problems += _not_finite_rows(layout.USER_FACTORS, data.user_factors)

    problems += _csr(layout.SEEN_INDPTR, data.seen_indptr, layout.SEEN_INDICES,
                     len(data.seen_indices))  # fmt: skip
    problems += _item_ids(layout.SEEN_INDICES, data.seen_indices, n_items)

    lists = data.lists
    problems += _csr(layout.REC_INDPTR, lists.indptr, layout.REC_ITEMS, len(lists.items))
    problems += _item_ids(layout.REC_ITEMS, lists.items, n_items, served_ids)
    problems += _not_finite_rows(layout.REC_SCORES, lists.scores, what="scores")
    problems += _foreign_bits(layout.REC_SOURCES, lists.sources, len(lists.source_names))

    cand = data.candidates
    csr = _csr(layout.CANDIDATE_INDPTR, cand.indptr, layout.CANDIDATE_ITEMS, len(cand.items))
    problems += csr
    problems += _item_ids(layout.CANDIDATE_ITEMS, cand.items, n_items)
    if not csr:  # the order within users needs a sound indptr
        problems += _increasing_within_rows(layout.CANDIDATE_ITEMS, cand.items, cand.indptr)
    problems += _source_pairs(cand.scores, cand.ranks)

    for segment, popular in data.popular.items():
        where = f"{layout.POPULAR} segment {segment}"
        problems += _item_ids(where, popular.items, n_items, served_ids)
        problems += _not_finite_rows(where, popular.scores, what="scores")

    if data.features is not None:
        problems += _feature_problems(data.features, n_items)
    return problems


def id_column_problems(file: str, column: str, idx: np.ndarray) -> list[str]:
    """A table's dense index column (items.parquet item_idx, users.parquet user_idx):
    every value >= 0 and none twice, or rows would overwrite each other when read."""
    problems = []
    if len(idx) and int(idx.min()) < 0:
        problems.append(f"{file}: {int((idx < 0).sum())} negative {column}")
    if len(idx) and len(np.unique(idx)) != len(idx):
        problems.append(f"{file}: {len(idx) - len(np.unique(idx))} duplicate {column}")
    return problems


# --- the checks, each returning its problems ("<file>: <what>") ---------------------------


def _blocks(n_rows: int, row_width: int = 1) -> Iterator[slice]:
    step = max(1, _BLOCK // max(row_width, 1))
    for lo in range(0, n_rows, step):
        yield slice(lo, min(lo + step, n_rows))


def _width(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:])) if array.ndim > 1 else 1


def _not_finite_rows(
    file: str, array: np.ndarray, what: str = "rows", allow_nan: bool = False
) -> list[str]:
    """Rows (of a 2-D array; values of a 1-D one) holding a value that is not finite;
    with allow_nan, only infinities count."""
    if array.size == 0:
        return []
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    bad = 0
    for block in _blocks(len(rows), rows.shape[1]):
        part = rows[block]
        # Fast path: a finite sum means every value is finite (NaN and inf propagate; a
        # sum that overflows only sends the block to the exact count below).
        with np.errstate(over="ignore", invalid="ignore"):
            total = part.sum()
        if np.isfinite(total):
            continue
        invalid = np.isinf(part) if allow_nan else ~np.isfinite(part)
        bad += int(invalid.any(axis=1).sum())
    if not bad:
        return []
    kind = "infinite" if allow_nan else "not finite"
    return [f"{file}: {bad} of {len(rows)} {what} {kind}"]


def _csr(file: str, indptr: np.ndarray, indices_file: str, n_indices: int) -> list[str]:
    """indptr of a CSR pair: 1-D, starts at 0, never decreases, ends at len(indices)."""
    if indptr.ndim != 1 or len(indptr) == 0:
        return [f"{file}: shape {indptr.shape}, expected a non-empty vector"]
    problems = []
    if int(indptr[0]) != 0:
        problems.append(f"{file}: starts at {int(indptr[0])}, not 0")
    if int(indptr[-1]) != n_indices:
        problems.append(f"{file}: ends at {int(indptr[-1])}, {indices_file} has {n_indices} rows")
    drops = np.flatnonzero(np.diff(indptr) < 0)  # diff[r] is the length of row r
    if len(drops):
        problems.append(
            f"{file}: decreases: {len(drops)} rows of negative length (first: row {int(drops[0])})"
        )
    return problems


def _item_ids(
    file: str, ids: np.ndarray, n_items: int, named: np.ndarray | None = None
) -> list[str]:
    """Item ids in [0, n_items); with `named` (False where items.parquet has no row), also
    naming an item of the catalogue."""
    flat = ids.reshape(-1)
    if flat.size == 0:
        return []
    outside = 0
    unnamed = 0
    for block in _blocks(len(flat)):
        part = flat[block]
        low, high = int(part.min()), int(part.max())
        if low < 0 or high >= n_items:
            bad = (part < 0) | (part >= n_items)
            outside += int(bad.sum())
            part = part[~bad]
        if named is not None and len(part):
            unnamed += int((~named[part]).sum())
    problems = []
    if outside:
        problems.append(f"{file}: {outside} of {len(flat)} item ids outside [0, {n_items})")
    if unnamed:
        problems.append(f"{file}: {unnamed} of {len(flat)} item ids name no item of {layout.ITEMS}")
    return problems


def _increasing_within_rows(file: str, values: np.ndarray, indptr: np.ndarray) -> list[str]:
    """values strictly increasing within each CSR row (a drop is allowed where a row starts)."""
    starts = np.asarray(indptr[1:-1], dtype=np.int64)
    bad_rows: list[int] = []
    n_bad = 0
    for block in _blocks(max(len(values) - 1, 0)):
        # steps[j] compares values[lo + j + 1] with values[lo + j]
        lo, hi = block.start, block.stop + 1
        steps = np.diff(values[lo:hi])
        at = np.flatnonzero(steps <= 0) + lo + 1  # positions not above their predecessor
        if not len(at):
            continue
        at = at[~_members(at, starts)]  # a new row begins there: allowed
        n_bad += len(at)
        if len(at) and not bad_rows:
            bad_rows.append(int(np.searchsorted(indptr, at[0], "right") - 1))
    if not n_bad:
        return []
    return [f"{file}: {n_bad} items not above the previous one within their user "
            f"(first in row {bad_rows[0]}); rows must be sorted by item"]  # fmt: skip


def _members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """values found in sorted_set (both int; sorted_set ascending), as a bool mask."""
    pos = np.searchsorted(sorted_set, values)
    found = pos < len(sorted_set)
    found[found] = sorted_set[pos[found]] == values[found]
    return found


def _foreign_bits(file: str, masks: np.ndarray, n_sources: int) -> list[str]:
    """Source bitmasks with a bit outside the bundle's batch sources (rec_sources.json)."""
    foreign = np.uint32(~((1 << n_sources) - 1) & 0xFFFFFFFF)
    bad = 0
    for block in _blocks(len(masks)):
        part = masks[block].astype(np.uint32, copy=False)
        if np.bitwise_or.reduce(part, initial=np.uint32(0)) & foreign:
            bad += int(((part & foreign) != 0).sum())
    return [f"{file}: {bad} of {len(masks)} masks set bits of no batch source"] if bad else []


def _source_pairs(scores: np.ndarray, ranks: np.ndarray) -> list[str]:
    """Candidate (score, rank) per source: both NaN (the source did not propose the item),
    or a finite score with a finite rank >= 1.

    Counted, not compared cell by cell: with v = rank + 0 * score (NaN unless the score is
    finite), the valid present cells are those where 1 <= v < inf; they are a subset of the
    cells where the score is not NaN and of those where the rank is not NaN, so the three
    counts are equal exactly when no cell is invalid."""
    n = len(scores)
    if n == 0:
        return []
    width = scores.shape[1] if scores.ndim > 1 else 1
    bad_blocks: list[slice] = []
    for block in _blocks(n, width):
        s, r = scores[block], ranks[block]
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN on purpose
            v = s * np.float32(0)
        v += r
        good = np.count_nonzero((v >= 1) & (v < np.inf))
        if good != np.count_nonzero(s == s) or good != np.count_nonzero(r == r):
            bad_blocks.append(block)
    if not bad_blocks:
        return []
    lone_score = lone_rank = bad_score = bad_rank = 0
    for block in bad_blocks:  # the rare path: say what is wrong
        s, r = np.asarray(scores[block]), np.asarray(ranks[block])
        s_nan, r_nan = np.isnan(s), np.isnan(r)
        both = ~s_nan & ~r_nan
        lone_score += int((~s_nan & r_nan).sum())
        lone_rank += int((s_nan & ~r_nan).sum())
        bad_score += int((both & np.isinf(s)).sum())
        bad_rank += int((both & ~((r >= 1) & np.isfinite(r))).sum())
    cells = n * width
    problems = []
    if lone_score or lone_rank:
        problems.append(
            f"{layout.CANDIDATE_SCORES}/{layout.CANDIDATE_RANKS}: {lone_score} scores without "
            f"a rank and {lone_rank} ranks without a score of {cells} cells (NaN must mark "
            f"both: the source did not propose the item)"
        )
    if bad_score:
        problems.append(f"{layout.CANDIDATE_SCORES}: {bad_score} of {cells} scores infinite")
    if bad_rank:
        problems.append(
            f"{layout.CANDIDATE_RANKS}: {bad_rank} of {cells} ranks not a finite number >= 1"
        )
    return problems


def _feature_problems(features: FeatureArrays, n_items: int) -> list[str]:
    problems: list[str] = []
    for name, rule in FEATURE_RULES.items():
        file = layout.feature_file(layout.FEATURE_ARRAY_FILES[name])
        array = getattr(features, name)
        if rule == FINITE:
            problems += _not_finite_rows(file, array)
        elif rule == FINITE_OR_NAN:
            problems += _not_finite_rows(file, array, allow_nan=True)
    for indptr_name, indices_name in _FEATURE_CSR:
        indptr_file = layout.feature_file(layout.FEATURE_ARRAY_FILES[indptr_name])
        indices_file = layout.feature_file(layout.FEATURE_ARRAY_FILES[indices_name])
        indices = getattr(features, indices_name)
        problems += _csr(indptr_file, getattr(features, indptr_name), indices_file, len(indices))
        problems += _item_ids(indices_file, indices, n_items)
    return problems
