"""The one bundle object a worker serves: complete at load, per-bundle state on it, and two
of them served side by side (what an A/B split needs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from online.bundle_loader import load_bundle
from online.config import ServiceConfig
from online.recommend import Query, Recommender
from online.scoring import AlsDotScorer
from shared import bundle_layout as layout
from shared.errors import BundleError
from tests.online.bundle_factory import build_bundle


def test_a_loaded_bundle_is_complete_and_frozen(artifacts: Path) -> None:
    bundle = load_bundle(artifacts / "runs" / "run-a")
    assert isinstance(bundle.scorer, AlsDotScorer) and bundle.scorer_fallback is None
    assert bundle.index.ntotal == bundle.n_items and bundle.features is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.scorer = AlsDotScorer(bundle.item_factors)  # type: ignore[misc]


def test_two_bundles_serve_side_by_side(artifacts: Path) -> None:
    a = load_bundle(artifacts / "runs" / "run-a")
    b = load_bundle(build_bundle(artifacts, "run-b", seed=5, publish=False))
    recommender = Recommender(ServiceConfig(artifacts=artifacts))
    query = Query(user_id="u3", k=8)
    first = recommender.recommend(a, query)
    other = recommender.recommend(b, query)
    again = recommender.recommend(a, query)
    assert first.items == again.items and first.items != other.items
    assert (a.caches.scored.misses, a.caches.scored.hits) == (1, 1)
    assert (b.caches.scored.misses, b.caches.scored.hits) == (1, 0)
    assert a.caches.ann_user is not b.caches.ann_user
    assert not np.shares_memory(a.item_factors, b.item_factors)


def test_answer_sources_are_the_names_of_the_bits_in_bit_order(artifacts: Path) -> None:
    bundle = load_bundle(artifacts / "runs" / "run-a")
    recommender = Recommender(ServiceConfig(artifacts=artifacts, force_fallback=True))
    answer = recommender.recommend(bundle, Query(user_id="u2", k=10))
    assert answer.served_by == "precomputed"
    # The factory's lists: every item from ann, every third also from cooc.
    assert {tuple(i["sources"]) for i in answer.items} <= {("ann", "precomputed"),
                                                          ("ann", "cooc", "precomputed")}
    cold = recommender.recommend(bundle, Query(user_id="nobody", k=3))
    assert [i["sources"] for i in cold.items] == [("popular",)] * 3


def test_a_bundle_missing_a_required_file_is_refused(artifacts: Path) -> None:
    run = build_bundle(artifacts, "run-b", publish=False)
    (run / layout.REC_INDPTR).unlink()
    with pytest.raises(BundleError, match=f"missing files \\['{layout.REC_INDPTR}'\\]"):
        load_bundle(run)
