"""The ONNX re-ranker's input, built exactly as the batch scorer builds it.

`shared.features.compute_features` reads the bundle's `features/` arrays and, per candidate,
the score and rank each batch source (ann, cooc, popular) gave it; those come from the
bundle's candidates.parquet, so an item the batch side proposed gets the same features here
as in training and batch scoring. Items only the service proposed (online ANN, recent items)
have no batch source: NaN, which compute_features turns into the "absent" defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.bundle import FEATURES_DIR
from shared.errors import BundleError
from shared.features import FEATURE_NAMES, SOURCES, compute_features, load_feature_arrays


def _float_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    out = [
        pc.fill_null(table.column(c).cast(pa.float64()), np.nan).to_numpy().astype(np.float32)
        for c in columns
    ]
    return np.stack(out, axis=1) if out else np.zeros((table.num_rows, 0), np.float32)


class RankerFeatures:
    """A FeatureFn (see scoring.py) over one bundle; loaded only when it ships a ranker."""

    def __init__(self, bundle_dir: Path) -> None:
        self.arrays = load_feature_arrays(bundle_dir / FEATURES_DIR, factors_dir=bundle_dir)
        columns = [f"{kind}_{s}" for kind in ("score", "rank") for s in SOURCES]
        try:
            table = pq.read_table(
                bundle_dir / "candidates.parquet", columns=["user_idx", "item_idx", *columns]
            ).sort_by([("user_idx", "ascending"), ("item_idx", "ascending")])
        except (OSError, KeyError, pa.ArrowInvalid) as exc:
            raise BundleError(f"candidates.parquet lacks the source columns: {exc}") from exc
        users = table.column("user_idx").to_numpy().astype(np.int64)
        n_users = max(int(users.max(initial=-1)) + 1, self.arrays.n_users)
        self.indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=self.indptr[1:])
        self.items = table.column("item_idx").to_numpy().astype(np.int64)
        self.scores = _float_matrix(table, columns[: len(SOURCES)])
        self.ranks = _float_matrix(table, columns[len(SOURCES) :])

    def source_matrices(
        self, user_idx: int | None, items: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """[n, len(SOURCES)] batch scores and ranks of these candidates, NaN where absent."""
        if user_idx is None or not 0 <= user_idx < len(self.indptr) - 1:
            return None, None
        lo, hi = int(self.indptr[user_idx]), int(self.indptr[user_idx + 1])
        stored = self.items[lo:hi]
        pos = np.searchsorted(stored, items)
        found = (pos < len(stored)) & (stored[np.minimum(pos, len(stored) - 1)] == items)
        scores = np.full((len(items), len(SOURCES)), np.nan, dtype=np.float32)
        ranks = np.full_like(scores, np.nan)
        scores[found] = self.scores[lo + pos[found]]
        ranks[found] = self.ranks[lo + pos[found]]
        return scores, ranks

    def __call__(self, inputs: Any, names: list[str]) -> np.ndarray:
        """Features for a ScoreInput; `names` must be the shared FEATURE_NAMES, in order."""
        if tuple(names) != FEATURE_NAMES:
            raise ValueError("ranker spec features differ from shared.features.FEATURE_NAMES")
        scores, ranks = self.source_matrices(inputs.user_idx, inputs.candidates)
        # Recent items from the request (newest first) win over the bundle's; a known user's
        # vector is read by compute_features itself, as in batch scoring.
        recent = inputs.recent_items if len(inputs.recent_items) else None
        vector = inputs.user_vector if inputs.user_idx is None else None
        return compute_features(
            self.arrays, inputs.user_idx, inputs.candidates, scores, ranks,
            recent_items=recent, user_vector=vector,
        )  # fmt: skip
