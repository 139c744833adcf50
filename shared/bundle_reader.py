"""Reading a bundle directory into one typed object, and the per-user lookups on it.

numpy and pyarrow only: everything a bundle holds except the FAISS index and the ONNX
session, which the service opens after the gunicorn fork (online/bundle_loader.py builds
its `LoadedBundle` on top of this `BundleData`). Large arrays are memory-mapped, so every
worker of a server shares one copy in the page cache; the ALS factors are loaded once and
are the same arrays in the features (`features.item_factors is item_factors`).

A `BundleData` holds no state beyond its arrays, and nothing here is kept per module: two
bundles are two objects (an A/B split serves both side by side).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared import bundle_layout as layout
from shared import feature_stats
from shared.bundle import GLOBAL_SEGMENT, BundleManifest, verify_bundle
from shared.bundle_contents import check_contents, id_column_problems
from shared.candidate_arrays import CandidateArrays
from shared.errors import BundleError
from shared.feature_arrays import load_feature_arrays
from shared.features import FeatureArrays
from shared.recommendation_arrays import RecommendationArrays
from shared.sources import POPULAR, PRECOMPUTED

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ItemList:
    """A ranked list of items with the sources (bitmask, shared.sources) of each."""

    items: np.ndarray  # int32 item_idx, best first
    scores: np.ndarray  # float32
    sources: np.ndarray  # uint32


@dataclass(frozen=True, eq=False)
class RankerSpec:
    """ranker/spec.json and the model file it names (not opened here: see online/scoring)."""

    spec: dict[str, Any]
    model: Path


@dataclass(frozen=True, eq=False, kw_only=True)
class BundleData:
    """One verified bundle, every file read (arrays memory-mapped), complete at construction."""

    path: Path
    manifest: BundleManifest
    # items.parquet
    item_ids: np.ndarray  # object [n_items]: item_idx -> item_id
    item_index: dict[str, int]
    titles: list[str]
    first_genre: np.ndarray  # int32 [n_items], code of the item's first genre
    available_everywhere: np.ndarray  # bool [n_items]
    region_masks: dict[str, np.ndarray]  # region -> bool [n_items]
    # users.parquet
    user_index: dict[str, int]
    user_region: list[str | None]
    # arrays
    item_factors: np.ndarray  # float32 [n_items, dim]
    user_factors: np.ndarray  # float32 [n_users, dim]
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    lists: RecommendationArrays  # the published lists (rec_*)
    candidates: CandidateArrays  # the candidate table (candidate_*)
    popular: dict[str, ItemList]  # segment -> its popular list (sources: POPULAR)
    # The re-ranker: None when the bundle ships none, or ships one that cannot be used;
    # ranker_problem then says why (the service serves with ALS and reports it).
    features: FeatureArrays | None
    ranker: RankerSpec | None
    ranker_problem: str | None
    # monitoring/feature_stats.json (shared/feature_stats.py); None when the bundle has none
    # or it is unreadable: the service then measures no train/serve skew for it.
    feature_stats: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_region)

    def region_mask(self, region: str | None) -> np.ndarray | None:
        """Items available in region; None means no restriction is known (no region)."""
        if region is None:
            return None
        # A region no item lists sees only the unrestricted items.
        return self.region_masks.get(region, self.available_everywhere)

    # --- per user ---------------------------------------------------------------------

    def seen(self, user_idx: int | None) -> np.ndarray:
        """int32 item_idx the user interacted with (empty for an unknown user)."""
        if user_idx is None or not 0 <= user_idx < len(self.seen_indptr) - 1:
            return np.empty(0, np.int32)
        lo, hi = int(self.seen_indptr[user_idx]), int(self.seen_indptr[user_idx + 1])
        return np.asarray(self.seen_indices[lo:hi])

    def precomputed_list(self, user_idx: int | None) -> ItemList | None:
        """The user's published list, best first; sources are its batch sources plus
        PRECOMPUTED. None when the user has no list."""
        rows = self.lists.user_slice(user_idx)
        if rows is None:
            return None
        sources = self.lists.sources_of(rows) | np.uint32(PRECOMPUTED)
        return ItemList(self.lists.items[rows], self.lists.scores[rows], sources)

    def candidate_sources(
        self, user_idx: int | None, items: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """[len(items), len(SOURCES)] batch scores and ranks of these items for this user,
        NaN where no batch source proposed the item; (None, None) for a user the batch never
        saw."""
        return self.candidates.lookup(user_idx, items)

    def recent_items(self, user_idx: int | None) -> np.ndarray:
        """The user's recent items in the bundle, newest first (empty without features)."""
        if self.features is None:
            return np.zeros(0, dtype=np.int32)
        return self.features.recent_items(user_idx)


def _read(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise BundleError(f"{path.name}: unreadable ({exc})") from exc


def _items(path: Path) -> dict[str, Any]:
    table = _read(path / layout.ITEMS, ["item_idx", "item_id", "title", "genres", "available_regions"])
    idx = table.column("item_idx").to_numpy().astype(np.int64)
    _refuse_ids(layout.ITEMS, "item_idx", idx)
    n = int(idx.max()) + 1 if len(idx) else 0
    item_ids = np.empty(n, dtype=object)
    item_ids[idx] = table.column("item_id").cast(pa.string()).to_pylist()
    titles = [""] * n
    for i, title in zip(idx, table.column("title").to_pylist(), strict=True):
        titles[i] = title or ""
    genre_codes: dict[str, int] = {}
    first_genre = np.zeros(n, dtype=np.int32)
    for i, genres in zip(idx, table.column("genres").to_pylist(), strict=True):
        first = (genres or "").split("|", 1)[0]
        first_genre[i] = genre_codes.setdefault(first, len(genre_codes))
    everywhere = np.zeros(n, dtype=bool)
    by_region: dict[str, list[int]] = {}
    for i, regions in zip(idx, table.column("available_regions").to_pylist(), strict=True):
        if not regions:  # null: no restriction
            everywhere[i] = True
            continue
        for region in regions.split("|"):
            by_region.setdefault(region, []).append(int(i))
    masks = {}
    for region, members in by_region.items():
        mask = everywhere.copy()
        mask[members] = True
        masks[region] = mask
    item_index = {item_id: int(i) for i, item_id in enumerate(item_ids) if item_id is not None}
    return {
        "item_ids": item_ids,
        "item_index": item_index,
        "titles": titles,
        "first_genre": first_genre,
        "available_everywhere": everywhere,
        "region_masks": masks,
    }


def _users(path: Path) -> dict[str, Any]:
    table = _read(path / layout.USERS, ["user_idx", "user_id", "region"])
    idx = table.column("user_idx").to_numpy().astype(np.int64)
    _refuse_ids(layout.USERS, "user_idx", idx)
    n = int(idx.max()) + 1 if len(idx) else 0
    regions: list[str | None] = [None] * n
    for i, region in zip(idx, table.column("region").to_pylist(), strict=True):
        regions[i] = region
    ids = table.column("user_id").cast(pa.string()).to_pylist()
    return {"user_index": dict(zip(ids, map(int, idx), strict=True)), "user_region": regions}


def _refuse_ids(file: str, column: str, idx: np.ndarray) -> None:
    """A negative or repeated index would silently overwrite another row when placed."""
    problems = id_column_problems(file, column, idx)
    if problems:
        raise BundleError("; ".join(problems))


def _popular(path: Path) -> dict[str, ItemList]:
    table = _read(path / layout.POPULAR, ["segment", "rank", "item_idx", "score"]).sort_by(
        [("segment", "ascending"), ("rank", "ascending")]
    )
    out: dict[str, ItemList] = {}
    segments = np.asarray(table.column("segment").to_pylist(), dtype=object)
    items = table.column("item_idx").to_numpy().astype(np.int32)
    scores = table.column("score").to_numpy().astype(np.float32)
    for segment in np.unique(segments):
        sel = segments == segment
        sources = np.full(int(sel.sum()), POPULAR, dtype=np.uint32)
        out[str(segment)] = ItemList(items[sel], scores[sel], sources)
    if GLOBAL_SEGMENT not in out:
        raise BundleError(f"{layout.POPULAR} has no {GLOBAL_SEGMENT} segment")
    return out


def _ranker(
    path: Path, factors: tuple[np.ndarray, np.ndarray]
) -> tuple[FeatureArrays | None, RankerSpec | None, str | None]:
    """features/ and ranker/spec.json when the bundle ships a re-ranker. A declared but
    unreadable one does not refuse the bundle: (None, None, why)."""
    spec_path = path / layout.RANKER_SPEC
    if not spec_path.exists():
        return None, None, None
    try:
        spec = json.loads(spec_path.read_text())
        model = path / layout.ranker_file(str(spec["model"]))
        features = load_feature_arrays(path / layout.FEATURES_DIR, factors=factors)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    return features, RankerSpec(spec, model), None


def _feature_stats(path: Path) -> dict[str, Any] | None:
    """The bundle's feature statistics; a bad file only costs the skew monitoring."""
    file = path / layout.FEATURE_STATS
    if not file.exists():
        return None
    try:
        return feature_stats.load(file)
    except (OSError, ValueError) as exc:
        log.error("unreadable feature stats, no skew monitoring for this bundle",
                  extra={"bundle": str(path), "error": str(exc)})  # fmt: skip
        return None


def _check_shapes(data: BundleData) -> None:
    """Refuse arrays that disagree with each other."""
    n_items, n_users = data.n_items, data.n_users
    item_f, user_f = data.item_factors, data.user_factors
    dim = item_f.shape[1] if item_f.ndim == 2 else -1
    problems = []
    if item_f.shape[0] < n_items:
        problems.append(f"item_factors has {item_f.shape[0]} rows < {n_items}")
    if user_f.ndim != 2 or user_f.shape[1] != dim:
        problems.append(f"user_factors shape {user_f.shape} vs dim {dim}")
    if user_f.shape[0] < n_users:
        problems.append("user_factors has fewer rows than users")
    if len(data.seen_indptr) < n_users + 1:
        problems.append("seen_indptr shorter than users + 1")
    if problems:
        raise BundleError(f"bundle {data.run_id}: " + "; ".join(problems))


def read_bundle(path: Path, verify_checksums: bool = True) -> BundleData:
    """Verify (shared.bundle.verify_bundle) and read a run directory; BundleError, with the
    reason, for anything that makes it unusable: checksums, shapes (_check_shapes) and
    contents (shared.bundle_contents: finite factors and scores, item ids in the catalogue,
    sound CSR arrays)."""
    manifest = verify_bundle(path, check_checksums=verify_checksums)
    try:
        items = _items(path)
        users = _users(path)
    except BundleError as exc:
        raise BundleError(f"bundle {manifest.run_id}: {exc}") from exc
    try:
        item_factors, user_factors, seen_indptr, seen_indices = (
            np.asarray(np.load(path / name, mmap_mode="r"))
            for name in (layout.ITEM_FACTORS, layout.USER_FACTORS,
                         layout.SEEN_INDPTR, layout.SEEN_INDICES)
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {manifest.run_id}: unreadable array ({exc})") from exc
    features, ranker, ranker_problem = _ranker(path, (item_factors, user_factors))
    lists = _named(manifest, RecommendationArrays.load, path, len(users["user_region"]))
    data = BundleData(
        path=path,
        manifest=manifest,
        **items,
        **users,
        item_factors=item_factors,
        user_factors=user_factors,
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        lists=lists,
        # The candidate columns follow the bundle's own source order (rec_sources.json).
        candidates=_named(manifest, CandidateArrays.load, path, lists.source_names),
        popular=_named(manifest, _popular, path),
        features=features,
        ranker=ranker,
        ranker_problem=ranker_problem,
        feature_stats=_feature_stats(path),
    )
    _check_shapes(data)
    check_contents(data)
    return data


def _named(manifest: BundleManifest, read: Callable[..., T], *args: Any) -> T:
    """read(*args), its BundleError prefixed with the bundle's run id."""
    try:
        return read(*args)
    except BundleError as exc:
        raise BundleError(f"bundle {manifest.run_id}: {exc}") from exc
