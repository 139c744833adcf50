"""Candidate sources: the one list of their names, and the columns named after them.

The nightly run proposes candidates from these sources, in this order. The order is the
column order of every per-source array (candidate_scores/ranks.npy, the re-ranker's
score_*/rr_* features) and bit b of every source bitmask stands for SOURCES[b].
A new source is added here first; everything else reads this tuple.
"""

from __future__ import annotations

SOURCES: tuple[str, ...] = ("ann", "cooc", "popular")
SCORE_COLUMNS: tuple[str, ...] = tuple(f"score_{s}" for s in SOURCES)
RANK_COLUMNS: tuple[str, ...] = tuple(f"rank_{s}" for s in SOURCES)
