"""Candidate sources: the one list of their names, the columns named after them, and the
one bitmask scheme that says which sources proposed an item.

The nightly run proposes candidates from SOURCES, in this order. The order is the column
order of every per-source array (candidate_scores/ranks.npy, the re-ranker's
score_*/rr_* features). A new source is added here first, in alphabetical order (the order
the candidates' `sources` lists are in); everything else reads this tuple.

Bitmasks: bit b stands for ALL_SOURCES[b], everywhere. ALL_SOURCES is SOURCES followed by
the service's own sources (SERVICE_SOURCES), so bit b = SOURCES[b] for the batch sources:
the masks of the published lists (rec_sources.npy), the source bits the Spark scoring tasks
carry, and the masks the service builds per candidate are one scheme. The service adds:
  precomputed  the item is on the user's published list
  recent       a neighbour of an item in the request's recent items
  caller       the caller supplied the item (/v1/rerank)
Its own ANN query (the user's vector against the bundle's index, as the nightly "ann"
source) sets the "ann" bit, and its popular lists the "popular" bit. The names of a mask,
in bit order, are the `sources` of an answer's item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np

SOURCES: tuple[str, ...] = ("ann", "cooc", "ease", "popular")  # alphabetical: see merge
SCORE_COLUMNS: tuple[str, ...] = tuple(f"score_{s}" for s in SOURCES)
RANK_COLUMNS: tuple[str, ...] = tuple(f"rank_{s}" for s in SOURCES)

SERVICE_SOURCES: tuple[str, ...] = ("precomputed", "recent", "caller")
ALL_SOURCES: tuple[str, ...] = SOURCES + SERVICE_SOURCES
MAX_SOURCES = 32  # one bit each in a uint32
assert len(set(ALL_SOURCES)) == len(ALL_SOURCES) <= MAX_SOURCES


def bit(source: str) -> int:
    """The mask of one source (ValueError for a name the scheme does not know)."""
    try:
        return 1 << ALL_SOURCES.index(source)
    except ValueError:
        raise ValueError(f"unknown source {source!r}; known: {ALL_SOURCES}") from None


ANN, COOC, EASE, POPULAR = (bit(s) for s in SOURCES)
PRECOMPUTED, RECENT, CALLER = (bit(s) for s in SERVICE_SOURCES)
BATCH_MASK = (1 << len(SOURCES)) - 1  # the bits the nightly run may set


def mask_of(sources: Iterable[str]) -> int:
    out = 0
    for source in sources:
        out |= bit(source)
    return out


@cache  # at most 2 ** len(ALL_SOURCES) masks: the same tuple for every item that has one
def names_of(mask: int) -> tuple[str, ...]:
    """The source names of a mask, in bit order."""
    return tuple(name for b, name in enumerate(ALL_SOURCES) if mask >> b & 1)


def bit_remap(names: Sequence[str]) -> np.ndarray | None:
    """For masks written with bit b = names[b] (a bundle published when the batch had other
    sources), the table old mask -> mask in today's bits; None when the bits already agree
    (names is a prefix of SOURCES). ValueError for a name this code does not know."""
    names = list(names)
    if names == list(SOURCES[: len(names)]):
        return None
    unknown = [n for n in names if n not in SOURCES]
    if unknown or len(set(names)) != len(names) or len(names) > 16:
        raise ValueError(f"source names {names}: unknown or repeated ({unknown})")
    table = np.zeros(1 << len(names), dtype=np.uint32)
    for old, name in enumerate(names):
        table[np.bitwise_and(np.arange(len(table)), 1 << old) != 0] |= np.uint32(bit(name))
    return table


def column_map(names: Sequence[str]) -> np.ndarray | None:
    """For per-source columns written in the order `names`, the column of each of today's
    SOURCES (-1: absent from that bundle); None when the columns already are SOURCES."""
    names = list(names)
    if names == list(SOURCES):
        return None
    return np.array([names.index(s) if s in names else -1 for s in SOURCES], dtype=np.int64)
