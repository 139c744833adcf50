"""The re-ranker's input: feature names, order, dtype and defaults, defined once, and the
one function that builds them for a user's candidates.

Batch training, batch scoring (the published lists) and the online service all call
`compute_features` on the same bundle arrays, so a feature can never mean one thing in
training and another in serving. numpy only: the service imports this without pyspark,
torch or onnxruntime.

Bundle arrays (`features/` in a bundle, `work/<date>/features/<variant>/` in batch; all
memory-mappable .npy, rows addressed by the stable item_idx / user_idx; file names in
shared/bundle_layout.py, read and written by shared/feature_arrays.py):
  item_stats.npy       float32 [n_items, len(ITEM_STATS)]  raw counts and days, see ITEM_STATS
  item_genres.npy      float32 [n_items, n_genres]         1 where the item has the genre
  user_stats.npy       float32 [n_users, len(USER_STATS)]  see USER_STATS
  user_genres.npy      float32 [n_users, n_genres]         share of the user's events per genre
  neighbor_indptr.npy  int64   [n_items + 1]  CSR: item -> co-occurring items (cosine)
  neighbor_indices.npy int32   [nnz]
  neighbor_sims.npy    float32 [nnz]
  recent_indptr.npy    int64   [n_users + 1]  CSR: user -> recent items, newest first
  recent_indices.npy   int32   [nnz]
  item_times.npy       float64 [n_items, 2]  first and last interaction (unix s; NaN: never)
  user_times.npy       float64 [n_users, 2]  first and last interaction (unix s; NaN: never)
  item_buckets.npy     float32 [n_items, n_buckets]  interactions per time bucket
  bucket_edges.npy     float64 [n_buckets + 1]       the buckets' bounds (unix s)
  bucket_totals.npy    float64 [n_buckets]           events per bucket over all items
plus item_factors.npy / user_factors.npy (ALS, float32 [n, dim]) at the bundle root.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from shared.cooc import cooc_scores
from shared.sources import SOURCES

FEATURE_DTYPE = np.float32
ITEM_STATS = ("pop_7d", "pop_30d", "pop_365d", "pop_all", "age_days", "last_days")
USER_STATS = ("n_events", "n_30d", "last_days", "mean_log_pop")
RECENT_ITEMS = 20  # recent items per user kept for the co-occurrence features
YEAR = 365.0 * 86400


@dataclass(frozen=True)
class Feature:
    name: str
    default: float  # the value when its input is missing (unknown user, item or source)
    doc: str


FEATURES: tuple[Feature, ...] = (
    *(Feature(f"score_{s}", 0.0, f"score of source {s}; 0 if it did not propose the item")
      for s in SOURCES),
    *(Feature(f"rr_{s}", 0.0, f"1/log2(1 + rank) in source {s}; 0 if absent") for s in SOURCES),
    Feature("n_sources", 0.0, "how many sources proposed the item"),
    Feature("als_dot", 0.0, "user vector . item vector (ALS)"),
    Feature("recent_sim", 0.0, "cosine of the item vector with the mean of recent item vectors"),
    *(Feature(f"log_{s}", 0.0, f"log1p of item {s}") for s in ITEM_STATS),
    *(Feature(f"user_log_{s}", 0.0, f"log1p of user {s}") for s in USER_STATS[:3]),
    Feature("user_mean_log_pop", 0.0, "mean log1p(pop_all) of the user's items: taste for hits"),
    Feature("genre_affinity", 0.0, "user genre shares . item genres / number of item genres"),
    Feature("genre_max", 0.0, "largest user genre share among the item's genres"),
    Feature("cooc_sum", 0.0, "sum over recent items of sim(recent, item) / log2(1 + position)"),
    Feature("cooc_max", 0.0, "largest sim(recent, item) over recent items"),
    Feature("cooc_hits", 0.0, "share of recent items that list the item as a neighbour"),
    # Time context: where the item stood when the user was last active. In production that
    # is "now"; under a per-user split users live in different years.
    Feature("item_first_vs_user", 0.0, "years from the user's last event to the item's first"),
    Feature("item_last_vs_user", 0.0, "years from the user's last event to the item's last"),
    Feature("log_pop_at_user_time", 0.0, "log1p of item events in the user's last time bucket"),
    Feature("log_share_at_user_time", 0.0, "log of the item's share of that bucket's events"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
TIME_CONTEXT: tuple[str, ...] = ("item_first_vs_user", "item_last_vs_user",
                                 "log_pop_at_user_time", "log_share_at_user_time")
N_FEATURES = len(FEATURES)
DEFAULTS = np.array([f.default for f in FEATURES], dtype=FEATURE_DTYPE)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
# Columns that depend on the item itself (not on the sources or the user alone).
_ITEM_SIDE = np.array([c for c in range(N_FEATURES) if c >= _COL["als_dot"]
                       and not FEATURE_NAMES[c].startswith("user_")], dtype=np.int64)


@dataclass(frozen=True)
class FeatureArrays:
    """The per-item and per-user arrays the features read (see the module docstring)."""

    item_stats: np.ndarray
    item_genres: np.ndarray
    user_stats: np.ndarray
    user_genres: np.ndarray
    neighbor_indptr: np.ndarray
    neighbor_indices: np.ndarray
    neighbor_sims: np.ndarray
    recent_indptr: np.ndarray
    recent_indices: np.ndarray
    item_times: np.ndarray
    user_times: np.ndarray
    item_buckets: np.ndarray
    bucket_edges: np.ndarray
    bucket_totals: np.ndarray
    item_factors: np.ndarray
    user_factors: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.item_stats.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_stats.shape[0])

    def recent_items(self, user_idx: int | None) -> np.ndarray:
        """The user's recent items, newest first (empty for an unknown user)."""
        if user_idx is None or not 0 <= user_idx < len(self.recent_indptr) - 1:
            return np.zeros(0, dtype=np.int32)
        lo, hi = self.recent_indptr[user_idx], self.recent_indptr[user_idx + 1]
        return np.asarray(self.recent_indices[lo:hi], dtype=np.int32)


FACTOR_NAMES = ("item_factors", "user_factors")  # the ALS fields (the bundle root has them)
ARRAY_NAMES = tuple(f.name for f in fields(FeatureArrays) if f.name not in FACTOR_NAMES)


def _cooc(arrays: FeatureArrays, recent: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[n, 3]: sum, max and hit share of neighbour similarity to the recent items
    (shared.cooc.cooc_scores, the co-occurrence source's own scoring)."""
    recent = recent[(recent >= 0) & (recent < len(arrays.neighbor_indptr) - 1)]
    if len(recent) == 0:
        return np.zeros((len(items), 3), dtype=np.float64)
    out = cooc_scores(arrays.neighbor_indptr, arrays.neighbor_indices, arrays.neighbor_sims,
                      recent).at(items)
    out[:, 2] /= len(recent)
    return out


def _time_context(arrays: FeatureArrays, user_idx: int, items: np.ndarray) -> np.ndarray:
    """[n, 4]: the item's first/last event relative to the user's last, and its popularity
    in the time bucket of the user's last event (defaults where times are unknown)."""
    out = np.tile(DEFAULTS[_COL["item_first_vs_user"]:_COL["item_first_vs_user"] + 4], (len(items), 1))
    user_last = float(arrays.user_times[user_idx, 1])
    if np.isnan(user_last) or arrays.item_buckets.shape[1] == 0:
        return out.astype(np.float64)
    times = np.asarray(arrays.item_times[items], dtype=np.float64)
    rel = (times - user_last) / YEAR
    out[:, 0:2] = np.where(np.isnan(rel), out[:, 0:2], rel)
    edges = np.asarray(arrays.bucket_edges, dtype=np.float64)
    bucket = int(np.clip(np.searchsorted(edges, user_last, side="right") - 1, 0, len(edges) - 2))
    counts = np.asarray(arrays.item_buckets[items, bucket], dtype=np.float64)
    total = max(float(arrays.bucket_totals[bucket]), 1.0)
    out[:, 2] = np.log1p(counts)
    out[:, 3] = np.log((counts + 1.0) / total)
    return out.astype(np.float64)


def compute_features(
    arrays: FeatureArrays,
    user_idx: int | None,
    items: np.ndarray,
    source_scores: np.ndarray | None = None,
    source_ranks: np.ndarray | None = None,
    recent_items: np.ndarray | None = None,
    user_vector: np.ndarray | None = None,
) -> np.ndarray:
    """Features of one user's candidates: float32 [len(items), N_FEATURES], FEATURE_NAMES order.

    Args:
        arrays: the bundle's feature arrays (shared.feature_arrays.load_feature_arrays).
        user_idx: the user's stable index, None (or out of range) for an unknown user.
        items: int item_idx of the candidates.
        source_scores, source_ranks: float [len(items), len(SOURCES)], NaN where a source did
            not propose the item; None when no source information exists (all absent).
        recent_items: item_idx newest first; default: the user's recent items in the bundle.
        user_vector: float [dim]; default: the user's ALS factors (zeros when unknown).
    Returns:
        The feature matrix; inputs that are missing take the FEATURES defaults.
    """
    items = np.asarray(items, dtype=np.int64)
    n = len(items)
    x = np.tile(DEFAULTS, (n, 1)).astype(np.float64)
    n_src = len(SOURCES)
    scores = np.full((n, n_src), np.nan) if source_scores is None else np.asarray(source_scores, float)
    ranks = np.full((n, n_src), np.nan) if source_ranks is None else np.asarray(source_ranks, float)
    present = ~np.isnan(ranks)
    x[:, _COL["score_ann"]:_COL["score_ann"] + n_src] = np.where(np.isnan(scores), 0.0, scores)
    safe_ranks = np.where(present, np.maximum(ranks, 1.0), 1.0)
    x[:, _COL["rr_ann"]:_COL["rr_ann"] + n_src] = np.where(present, 1 / np.log2(1 + safe_ranks), 0.0)
    x[:, _COL["n_sources"]] = present.sum(axis=1)

    known_item = (items >= 0) & (items < arrays.n_items)
    at = np.where(known_item, items, 0)
    known_user = user_idx is not None and 0 <= user_idx < arrays.n_users
    if recent_items is None:
        recent_items = arrays.recent_items(user_idx)
    recent = np.asarray(recent_items, dtype=np.int64)
    recent = recent[(recent >= 0) & (recent < arrays.n_items)]

    item_vecs = np.asarray(arrays.item_factors[at], dtype=np.float64)
    if user_vector is None and known_user:
        user_vector = arrays.user_factors[user_idx]
    if user_vector is not None:
        x[:, _COL["als_dot"]] = item_vecs @ np.asarray(user_vector, dtype=np.float64)
    if len(recent):
        centre = np.asarray(arrays.item_factors[recent], dtype=np.float64).mean(axis=0)
        norms = np.linalg.norm(item_vecs, axis=1) * np.linalg.norm(centre)
        x[:, _COL["recent_sim"]] = np.where(norms > 0, item_vecs @ centre / np.maximum(norms, 1e-12), 0.0)

    stats = np.log1p(np.maximum(np.asarray(arrays.item_stats[at], dtype=np.float64), 0.0))
    first = _COL[f"log_{ITEM_STATS[0]}"]
    x[:, first:first + len(ITEM_STATS)] = stats
    genres = np.asarray(arrays.item_genres[at], dtype=np.float64)
    if known_user:
        assert user_idx is not None
        ustats = np.asarray(arrays.user_stats[user_idx], dtype=np.float64)
        first = _COL[f"user_log_{USER_STATS[0]}"]
        x[:, first:first + 3] = np.log1p(np.maximum(ustats[:3], 0.0))
        x[:, _COL["user_mean_log_pop"]] = ustats[3]
        shares = np.asarray(arrays.user_genres[user_idx], dtype=np.float64)
        x[:, _COL["genre_affinity"]] = genres @ shares / np.maximum(genres.sum(axis=1), 1.0)
        x[:, _COL["genre_max"]] = (genres * shares).max(axis=1, initial=0.0)
    x[:, _COL["cooc_sum"]:_COL["cooc_sum"] + 3] = _cooc(arrays, recent, items)
    if known_user:
        x[:, _COL["item_first_vs_user"]:_COL["item_first_vs_user"] + 4] = _time_context(
            arrays, int(user_idx), at)  # type: ignore[arg-type]
    # An item outside the arrays (newer than the bundle) has no item-side signal at all.
    unknown = np.flatnonzero(~known_item)
    if len(unknown):
        x[np.ix_(unknown, _ITEM_SIDE)] = DEFAULTS[_ITEM_SIDE]
    return x.astype(FEATURE_DTYPE)
