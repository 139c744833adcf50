"""The ONNX re-ranker's input, built exactly as the batch scorer builds it.

`shared.features.compute_features` reads the bundle's `features/` arrays and, per candidate,
the score and rank each batch source (ann, cooc, popular) gave it; those come from the
bundle's memory-mapped candidate arrays (`BundleData.candidate_sources`), so an item the
batch side proposed gets the same features here as in training and batch scoring. Items
only the service proposed (online ANN, recent items) have no batch source: NaN, which
compute_features turns into the "absent" defaults.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from shared.bundle_reader import BundleData
from shared.features import FEATURE_NAMES, FeatureArrays, compute_features

if TYPE_CHECKING:
    from online.scoring import ScoreInput

# TEST ONLY: "name=factor,..." multiplies those features after compute_features, so a drill
# can run a service whose feature code differs from training without editing code (the
# train/serve skew drill, tests/e2e/test_skew_drills_e2e.py). Never set it in production:
# it corrupts the model's input on purpose. Unset (the default), nothing changes.
TEST_FEATURE_SCALE_ENV = "RECSYS_TEST_FEATURE_SCALE"


def parse_feature_scale(text: str | None) -> dict[int, float]:
    """FEATURE_NAMES column -> factor from RECSYS_TEST_FEATURE_SCALE; ValueError if bad."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, factor = part.partition("=")
        if not sep or name.strip() not in FEATURE_NAMES:
            raise ValueError(f"{TEST_FEATURE_SCALE_ENV}: {part!r} is not <feature>=<factor>")
        out[FEATURE_NAMES.index(name.strip())] = float(factor)
    return out


class RankerFeatures:
    """A FeatureFn (see scoring.py) over one bundle that ships a ranker (and so features/)."""

    def __init__(self, data: BundleData) -> None:
        if data.features is None:
            raise ValueError(f"bundle {data.run_id} has no feature arrays")
        self.data = data
        self.arrays: FeatureArrays = data.features
        self._test_scale = parse_feature_scale(os.environ.get(TEST_FEATURE_SCALE_ENV))

    def __call__(self, inputs: ScoreInput, names: list[str]) -> np.ndarray:
        """Features for a ScoreInput, the columns `names` (the model's, from its spec): the
        shared FEATURE_NAMES, or a subset of them in any order, for a model trained before
        a feature was added (a bundle published by the previous release)."""
        columns = feature_columns(names)
        scores, ranks = self.data.candidate_sources(inputs.user_idx, inputs.candidates)
        # Recent items from the request (newest first) win over the bundle's; a known user's
        # vector is read by compute_features itself, as in batch scoring.
        recent = inputs.recent_items if len(inputs.recent_items) else None
        vector = inputs.user_vector if inputs.user_idx is None else None
        x = compute_features(
            self.arrays, inputs.user_idx, inputs.candidates, scores, ranks,
            recent_items=recent, user_vector=vector,
        )  # fmt: skip
        for column, factor in self._test_scale.items():  # empty unless a drill set it
            x[:, column] *= factor
        return x if columns is None else np.ascontiguousarray(x[:, columns])


def feature_columns(names: list[str]) -> np.ndarray | None:
    """Column of each of `names` in FEATURE_NAMES (None: names are FEATURE_NAMES); ValueError
    for a name this code does not compute (batch/service version skew)."""
    if tuple(names) == FEATURE_NAMES:
        return None
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"ranker spec features this code does not compute: {unknown}")
    return np.array([FEATURE_NAMES.index(n) for n in names], dtype=np.int64)
