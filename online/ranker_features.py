"""The ONNX re-ranker's input, built exactly as the batch scorer builds it.

`shared.features.compute_features` reads the bundle's `features/` arrays and, per candidate,
the score and rank each batch source (ann, cooc, popular) gave it; those come from the
bundle's memory-mapped candidate arrays (shared/candidate_arrays.py), so an item the batch
side proposed gets the same features here as in training and batch scoring. Items only the
service proposed (online ANN, recent items) have no batch source: NaN, which
compute_features turns into the "absent" defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.bundle import FEATURES_DIR
from shared.candidate_arrays import CandidateArrays
from shared.features import FEATURE_NAMES, compute_features, load_feature_arrays


class RankerFeatures:
    """A FeatureFn (see scoring.py) over one bundle; loaded only when it ships a ranker."""

    def __init__(self, bundle_dir: Path) -> None:
        self.arrays = load_feature_arrays(bundle_dir / FEATURES_DIR, factors_dir=bundle_dir)
        # Memory-mapped, so every worker shares one copy in the page cache.
        self.candidates = CandidateArrays.load(bundle_dir)

    def source_matrices(
        self, user_idx: int | None, items: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """[n, len(SOURCES)] batch scores and ranks of these candidates, NaN where absent."""
        return self.candidates.lookup(user_idx, items)

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
