"""Scoring ranked lists against the external hold-out, and the lists the harness builds itself.

Every list is a frame (user_id, item_id, rank). Before the cut at k, items the user has in
the training part are removed (they are never recommended) and the ranks closed up. The
metrics are shared/metrics.py's (binary relevance, ideal DCG over min(|held out|, k)), here
vectorised with pandas; the mean runs over every user with a held-out part, a user without a
list counting zero. tests/unit/test_holdout.py holds them to `shared.metrics.user_metrics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared import ease
from shared.metrics import METRIC_NAMES, ideal_dcg

K = 10


def _pairs(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[["user_id", "item_id"]].astype(str))


def clean_lists(lists: pd.DataFrame, seen: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """The lists without training items, re-ranked 1.. per user, cut at k."""
    out = lists[["user_id", "item_id", "rank"]].astype({"user_id": str, "item_id": str})
    out = out[~_pairs(out).isin(_pairs(seen))]
    out = out.sort_values(["user_id", "rank", "item_id"], kind="stable", ignore_index=True)
    out = out.drop_duplicates(["user_id", "item_id"])
    out["rank"] = out.groupby("user_id", sort=False).cumcount() + 1
    return out[out["rank"] <= k].reset_index(drop=True)


def score(lists: pd.DataFrame, held_out: pd.DataFrame, seen: pd.DataFrame,
          k: int = K) -> dict[str, float]:
    """Mean nDCG, precision, recall, MAP at k over the held-out users, and the share of
    them that got a list at all."""
    ranked = clean_lists(lists, seen, k)
    held = held_out[["user_id", "item_id"]].astype(str).drop_duplicates()
    n_rel = held.groupby("user_id").size().rename("n_rel")
    hits = ranked.merge(held, on=["user_id", "item_id"]).sort_values(["user_id", "rank"])
    hits["hit_no"] = hits.groupby("user_id").cumcount() + 1
    hits["gain"] = 1.0 / np.log2(hits["rank"] + 1.0)
    hits["ap"] = hits["hit_no"] / hits["rank"]
    per_user = hits.groupby("user_id").agg(dcg=("gain", "sum"), n_hits=("gain", "size"),
                                           ap_sum=("ap", "sum"))
    per_user = per_user.reindex(n_rel.index, fill_value=0.0).join(n_rel)
    m = np.minimum(per_user["n_rel"].to_numpy(), k)
    values = {
        "ndcg": per_user["dcg"].to_numpy() / ideal_dcg(k)[m - 1],
        "precision": per_user["n_hits"].to_numpy() / k,
        "recall": per_user["n_hits"].to_numpy() / per_user["n_rel"].to_numpy(),
        "map": per_user["ap_sum"].to_numpy() / m,
    }
    users = len(per_user)
    out = {f"{name}@{k}": float(values[name].mean()) if users else 0.0 for name in METRIC_NAMES}
    out["users"] = float(users)
    out["users_with_list"] = float(ranked["user_id"].isin(n_rel.index).groupby(ranked["user_id"])
                                   .any().sum()) if users else 0.0
    return out


def popularity_lists(train: pd.DataFrame, users: pd.Index, k: int = K) -> pd.DataFrame:
    """Every user the same list: the items with the most training interactions (ties: id),
    long enough that k remain after each user's own items are removed."""
    counts = train.groupby("item_id").size()
    longest = int(train.groupby("user_id").size().max()) if len(train) else 0
    top = counts.reset_index(name="n").sort_values(["n", "item_id"], ascending=[False, True])
    top = top["item_id"].astype(str).to_numpy()[: k + longest]
    frame = pd.DataFrame({"user_id": np.repeat(np.asarray(users, dtype=str), top.size),
                          "item_id": np.tile(top, len(users)),
                          "rank": np.tile(np.arange(1, top.size + 1), len(users))})
    return frame


class EaseFit:
    """EASE over a training frame: the covered items, their weights, each user's columns."""

    def __init__(self, train: pd.DataFrame, max_items: int, min_count: int) -> None:
        pairs = train[["user_id", "item_id"]].astype(str).drop_duplicates()
        item_codes, item_ids = pd.factorize(pairs["item_id"], sort=True)
        counts = np.bincount(item_codes, minlength=len(item_ids))
        self.selected = ease.select_items(counts, max_items, min_count)
        self.item_ids = np.asarray(item_ids, dtype=str)[self.selected]
        self.coverage = float(counts[self.selected].sum() / max(counts.sum(), 1))
        cols = ease.column_map(self.selected, len(item_ids))[item_codes]
        pairs = pairs.assign(col=cols)
        covered = pairs[pairs["col"] >= 0]
        self.columns: dict[str, np.ndarray] = {
            str(u): g.to_numpy(np.int64) for u, g in covered.groupby("user_id")["col"]}
        self.weights: np.ndarray | None = None

    def gram(self) -> np.ndarray:
        return ease.gram_matrix(self.columns.values(), self.selected.size)

    def col_of(self, item_ids: pd.Series) -> np.ndarray:
        index = pd.Index(self.item_ids)
        return np.asarray(index.get_indexer(item_ids.astype(str)), dtype=np.int64)

    def lists(self, users: pd.Index, k: int = K) -> pd.DataFrame:
        assert self.weights is not None, "solve first"
        parts = []
        for user in np.asarray(users, dtype=str):
            top = ease.top_unseen(self.weights, self.columns.get(user, np.empty(0, np.int64)), k)
            parts.append(pd.DataFrame({"user_id": user, "item_id": self.item_ids[top.cols],
                                       "rank": np.arange(1, top.cols.size + 1)}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["user_id", "item_id", "rank"])


def tune_ease(inner_train: pd.DataFrame, inner_held: pd.DataFrame, max_items: int,
              min_count: int, grid: tuple[float, ...] = ease.LAMBDA_GRID) -> ease.Tuned:
    """λ by nDCG@10 on an inner split: fit on its training part, score its held-out part."""
    fit = EaseFit(inner_train, max_items, min_count)
    gram = fit.gram()
    held = inner_held.assign(col=fit.col_of(inner_held["item_id"]))
    n_rel = held.groupby("user_id").size()
    rel = {str(u): g.to_numpy(np.int64) for u, g in held[held["col"] >= 0].groupby("user_id")["col"]}
    users = [str(u) for u in n_rel.index]
    return ease.tune_lambda(gram, [fit.columns.get(u, np.empty(0, np.int64)) for u in users],
                            [rel.get(u, np.empty(0, np.int64)) for u in users],
                            [int(n_rel[u]) for u in users], grid)
