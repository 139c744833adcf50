"""Ground truth for the simulator: who likes what, recovered from the data generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batch.data.generate import (
    SECONDARY_GENRE_WEIGHT,
    GenerateConfig,
    build_catalog,
    hidden_tastes,
    user_ids,
)


@dataclass(frozen=True)
class GroundTruth:
    """Per-user genre tastes and per-item genres, as the generator drew them."""

    user_ids: list[str]
    item_ids: list[str]
    tastes: np.ndarray  # (n_users, n_genres), rows sum to 1
    item_genres: np.ndarray  # (n_items, 3) genre indices, -1 padded; the first is primary

    @classmethod
    def from_config(cls, cfg: GenerateConfig) -> GroundTruth:
        cat = build_catalog(cfg)
        n = cat.n_items
        ids = cat.ids.slice(0, n).to_pylist()
        return cls(user_ids(cfg), ids, hidden_tastes(cfg, cat), cat.genres[:n].copy())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_row", {u: k for k, u in enumerate(self.user_ids)})
        object.__setattr__(self, "_item_row", {i: k for k, i in enumerate(self.item_ids)})

    def relevance(self, user_id: str, item_ids: list[str]) -> np.ndarray:
        """How much the user likes each item, in [0, 1]: the taste for the item's best genre
        relative to the user's favourite genre (secondary genres count less, as in the
        generator). Unknown users and items score 0: they have no truth to follow."""
        out = np.zeros(len(item_ids))
        row = self._user_row.get(user_id)  # type: ignore[attr-defined]
        if row is None:
            return out
        taste = self.tastes[row]
        top = float(taste.max()) or 1.0
        weights = np.array([1.0, SECONDARY_GENRE_WEIGHT, SECONDARY_GENRE_WEIGHT])
        for k, item in enumerate(item_ids):
            i = self._item_row.get(item)  # type: ignore[attr-defined]
            if i is None:
                continue
            genres = self.item_genres[i]
            valid = genres >= 0
            out[k] = float((taste[genres[valid]] * weights[valid]).max() / top)
        return out
