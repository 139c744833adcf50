"""Feature drift, batch side (batch/ranker/feature_stats.py) on a small bundle's arrays,
candidates and linear model (score = 2 * als_dot): the candidates as scored in Spark are the
numpy features, and the checks against the previous run's statistics warn on the feature
that moved, only."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from batch.ranker import feature_stats as bfs
from shared import bundle_layout as layout
from shared import feature_stats as fs
from shared.bundle_reader import read_bundle
from shared.config import DriftConfig
from shared.features import FEATURE_NAMES, compute_features
from tests.online.bundle_factory import LIST_LENGTH, build_bundle

pytestmark = [pytest.mark.spark]
ALS = FEATURE_NAMES.index("als_dot")
POP = FEATURE_NAMES.index("log_pop_all")


@pytest.fixture(scope="module")
def scored(spark: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, ...]:
    tmp = tmp_path_factory.mktemp("fstats")
    bundle = build_bundle(tmp / "art", "run-a", with_ranker=True)
    features = tmp / "features"  # a features stage directory: the arrays plus the factors
    shutil.copytree(bundle / layout.FEATURES_DIR, features)
    for name in (layout.ITEM_FACTORS, layout.USER_FACTORS):
        shutil.copy(bundle / name, features / name)
    model = (bundle / layout.ranker_file(layout.MODEL_INT8)).read_bytes()
    candidates = spark.read.parquet(str(bundle / layout.CANDIDATES))  # type: ignore[attr-defined]
    x, scores = bfs.candidate_sample(candidates, features, model, 2, users=1000)
    few = bfs.candidate_sample(candidates, features, model, 2, users=10)
    data = read_bundle(bundle)
    assert data.features is not None
    table = pq.read_table(bundle / layout.CANDIDATES, filters=[("user_idx", "=", 0)])
    items = table["item_idx"].to_numpy()
    direct = compute_features(data.features, 0, items, *data.candidate_sources(0, items))
    return x, scores, few[0], direct


def test_candidates_as_scored_match_the_numpy_features(scored: tuple[np.ndarray, ...]) -> None:
    x, scores, few, direct = scored
    assert x.shape == (39 * LIST_LENGTH, len(FEATURE_NAMES))  # every candidate of every user
    np.testing.assert_allclose(scores, 2 * x[:, ALS], rtol=1e-5, atol=1e-5)
    assert 0 < len(few) < len(x) and len(few) % LIST_LENGTH == 0  # whole users, not rows
    # User 0's rows: the Spark job computes what the service computes for them.
    rows = {tuple(r) for r in np.round(x, 4).tolist()}
    assert len(direct) == LIST_LENGTH
    assert all(tuple(r) in rows for r in np.round(direct, 4).tolist())


def test_feature_drift_checks_warn_on_the_moved_feature(scored: tuple[np.ndarray, ...]) -> None:
    x, scores = scored[0], scored[1]
    defaults = dict.fromkeys(FEATURE_NAMES, 0.0)
    stats = fs.build(x, FEATURE_NAMES, defaults, scores, x, scores)
    cfg = DriftConfig()
    first = bfs.drift_results(stats, x, scores, None, None, cfg)
    prev = [r for r in first if r.check.startswith(("feature_psi_prev", "score_psi_prev"))]
    assert len(prev) == len(FEATURE_NAMES) + 1 and {r.status for r in prev} == {"skipped"}
    assert {r.status for r in first if r.check.startswith("feature_psi_train")} == {"off"}

    moved = x.copy()
    moved[:, POP] *= 3.0  # tonight's log_pop_all is computed differently
    results = {r.check: r for r in bfs.drift_results(stats, moved, scores, stats, "run-prev", cfg)}
    assert results["feature_psi_prev:log_pop_all"].status == "warn"
    assert results["feature_psi_prev:log_pop_all"].value > 1.0
    others = [r for name, r in results.items() if name.startswith("feature_psi_prev:")
              and name != "feature_psi_prev:log_pop_all"]
    assert {r.status for r in others} == {"ok"} and max(r.value for r in others) == 0.0
    assert results["score_psi_prev"].status == "ok"
