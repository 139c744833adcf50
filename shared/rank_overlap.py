"""How far two ranked item lists agree: Jaccard@k of their items and the rank correlation
(Kendall tau, Spearman rho) of the items they share. Pure numpy: the service computes it
for every shadow-ranked request, and its install has no scipy.

Both correlations compare the order of the common items only (each list's ranks of those
items, re-ranked 1..n among them); with fewer than two common items there is no order to
compare and both are None. Lists hold distinct items (the rules never repeat one), so
there are no ties and tau-a equals tau-b.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Overlap:
    jaccard: float  # |A ∩ B| / |A ∪ B|; 1.0 for two empty lists (they agree)
    common: int
    kendall_tau: float | None
    spearman: float | None


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return 1.0 if union == 0 else len(sa & sb) / union


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float | None:
    """(concordant - discordant) / pairs, over all pairs: O(n²), n <= k (tens of items)."""
    n = len(x)
    if n < 2:
        return None
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(n, k=1)
    return float((dx * dy)[upper].sum() / (n * (n - 1) / 2))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """1 - 6 Σd² / (n (n² - 1)) on the ranks of x and y (no ties)."""
    n = len(x)
    if n < 2:
        return None
    rx = np.argsort(np.argsort(x)).astype(np.float64)
    ry = np.argsort(np.argsort(y)).astype(np.float64)
    d2 = float(((rx - ry) ** 2).sum())
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def overlap(served: Sequence[str], shadow: Sequence[str]) -> Overlap:
    """The agreement of two ranked lists (best first)."""
    position = {item: rank for rank, item in enumerate(shadow)}
    common = [(rank, position[item]) for rank, item in enumerate(served) if item in position]
    x = np.asarray([c[0] for c in common], dtype=np.float64)
    y = np.asarray([c[1] for c in common], dtype=np.float64)
    return Overlap(jaccard(served, shadow), len(common), kendall_tau(x, y), spearman(x, y))
