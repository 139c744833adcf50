"""Reading and writing a features directory: one .npy per shared.features.FeatureArrays
field, named in shared/bundle_layout.py.

Two directories have this format: the features stage's `work/<date>/features/<variant>/`
(with the ALS factors beside the arrays) and a bundle's `features/` (without them: the
bundle root has the factors, which the reader loads once and shares with the ALS scorer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from shared import bundle_layout as layout
from shared.features import FeatureArrays


def save_feature_arrays(arrays: FeatureArrays, directory: Path, with_factors: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    files = layout.FEATURE_ARRAY_FILES | (layout.FACTOR_ARRAY_FILES if with_factors else {})
    for name, file in files.items():
        np.save(directory / file, getattr(arrays, name))


def load_feature_arrays(
    directory: Path,
    factors: tuple[np.ndarray, np.ndarray] | None = None,
    mmap: bool = True,
) -> FeatureArrays:
    """The arrays of `directory`; the ALS factors (item, user) as given, else from
    `directory` too (the stage's format). Memory-mapped: replicas share pages."""
    mode: Literal["r"] | None = "r" if mmap else None
    # np.asarray turns each np.memmap into a plain ndarray view of the same mapping: the
    # pages stay shared, but indexing skips memmap's Python-level __getitem__ and
    # __array_finalize__ (a third of the feature time of a request, measured).
    files = layout.FEATURE_ARRAY_FILES | (layout.FACTOR_ARRAY_FILES if factors is None else {})
    loaded = {
        name: np.asarray(np.load(directory / file, mmap_mode=mode)) for name, file in files.items()
    }
    if factors is not None:
        loaded["item_factors"], loaded["user_factors"] = factors
    return FeatureArrays(**loaded)
