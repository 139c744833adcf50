"""The scorer interface: ALS dot product, and the ONNX re-ranker when a bundle ships one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from online.ranker_features import RankerFeatures
from online.scoring import AlsDotScorer, ModelError, OnnxScorer, ScoreInput, load_scorer
from shared import bundle_layout as layout
from shared.bundle_reader import read_bundle
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import make_app, recommend

pytest.importorskip("onnx")  # the factory writes the test model with it (batch extra)


@pytest.fixture
def ranked(tmp_path: Path) -> Path:
    build_bundle(tmp_path, "run-r", with_ranker=True)
    return tmp_path


def _inputs(bundle, user_idx: int | None, items: np.ndarray) -> ScoreInput:  # type: ignore[no-untyped-def]
    vector = np.asarray(bundle.user_factors[user_idx or 0], np.float32)
    return ScoreInput(
        user_idx, vector, np.empty(0, np.int32), None, None, items,
        np.zeros(len(items), np.uint32),
    )  # fmt: skip


def test_bundle_with_ranker_is_served_by_onnx(ranked: Path) -> None:
    app = make_app(ranked)
    client = app.test_client()
    assert client.get("/readyz").get_json()["scorer"] == "onnx-int8"
    data = recommend(client, user_id="u2", k=5)
    assert data["scorer"] == "onnx-int8" and data["served_by"] == "rerank"
    cold = recommend(client, user_id="new", k=5, context={"recent_item_ids": ["m3", "m8"]})
    assert cold["scorer"] == "onnx-int8" and cold["served_by"] == "rerank"
    assert b'recsys_bundle_info{run_id="run-r",scorer="onnx-int8"}' in client.get("/metrics").data


def test_onnx_scores_match_the_model_on_shared_features(ranked: Path) -> None:
    app = make_app(ranked)
    app.extensions["recsys"].store.ensure_started()
    bundle = app.extensions["recsys"].store.current
    assert isinstance(bundle.scorer, OnnxScorer)
    inputs = _inputs(bundle, 3, np.arange(20, dtype=np.int32))
    # The factory's model is score = 2 * als_dot.
    als = AlsDotScorer(bundle.item_factors).score(inputs)
    assert np.allclose(bundle.scorer.score(inputs), 2 * als, atol=1e-3)
    # One load: the features read the very factors the bundle (and the ALS scorer) hold.
    assert isinstance(bundle.scorer.features, RankerFeatures)
    assert bundle.scorer.features.arrays.item_factors is bundle.item_factors
    assert bundle.features is bundle.scorer.features.arrays


def test_feature_failure_is_a_model_error(ranked: Path) -> None:
    app = make_app(ranked)
    app.extensions["recsys"].store.ensure_started()
    bundle = app.extensions["recsys"].store.current

    def wrong_width(inputs: ScoreInput, names: list[str]) -> np.ndarray:
        return np.zeros((len(inputs.candidates), 5), np.float32)

    scorer, _ = load_scorer(bundle, features=wrong_width)
    with pytest.raises(ModelError):
        scorer.score(_inputs(bundle, 0, np.arange(3, dtype=np.int32)))


def test_spec_with_other_features_degrades_to_als(ranked: Path) -> None:
    run = ranked / "runs" / "run-r"
    spec = json.loads((run / layout.RANKER_SPEC).read_text())
    # A feature this code does not compute (the model's columns are fed by name, so only
    # an unknown name is skew; a subset or another order is fed exactly as the spec says).
    spec["features"] = [*spec["features"][:-1], "a_feature_of_a_newer_release"]
    (run / layout.RANKER_SPEC).write_text(json.dumps(spec))
    app = make_app(ranked, verify_checksums=False)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["scorer"] == "als-dot"
    assert b'recsys_errors_total{kind="ranker_unusable"}' in client.get("/metrics").data


def test_unusable_ranker_degrades_to_als(ranked: Path) -> None:
    run = ranked / "runs" / "run-r"
    spec = json.loads((run / layout.RANKER_SPEC).read_text())
    (run / layout.RANKER_SPEC).write_text(json.dumps(spec | {"model": "missing.onnx"}))
    scorer, why = load_scorer(read_bundle(run, verify_checksums=False))
    assert scorer.name == "als-dot" and why and why.startswith("ranker_unusable")


def test_missing_feature_array_degrades_to_als(ranked: Path) -> None:
    run = ranked / "runs" / "run-r"
    (run / layout.FEATURE_FILES[0]).unlink()
    data = read_bundle(run, verify_checksums=False)  # optional files: the bundle stays valid
    assert data.features is None and data.ranker is None and data.ranker_problem
    scorer, why = load_scorer(data)
    assert scorer.name == "als-dot" and why and why.startswith("ranker_unusable")


def test_no_ranker_means_als(tmp_path: Path) -> None:
    data = read_bundle(build_bundle(tmp_path, "run-a"))
    assert data.features is None and data.ranker is None and data.ranker_problem is None
    scorer, why = load_scorer(data)
    assert scorer.name == "als-dot" and why is None


def test_a_bundle_whose_lists_are_the_fused_order_is_ranked_by_it(ranked: Path) -> None:
    """spec "lists": "fused" (the batch found the model's order worse than its input): the
    service ranks by the run's fused order with the run's weights, not with the model."""
    from shared.fusion import fused_scores, weight_vector
    from shared.sources import SOURCES

    run = ranked / "runs" / "run-r"
    weights = {"ann": 1.0, "cooc": 0.5, "ease": 2.0, "popular": 0.25}
    spec = json.loads((run / layout.RANKER_SPEC).read_text())
    (run / layout.RANKER_SPEC).write_text(
        json.dumps(spec | {"lists": "fused", "fusion_weights": weights})
    )
    data = read_bundle(run, verify_checksums=False)
    scorer, why = load_scorer(data)
    assert scorer.name == "fused" and why is None
    user_idx = next(u for u in data.user_index.values() if data.precomputed_list(u) is not None)
    items = data.precomputed_list(user_idx).items  # type: ignore[union-attr]
    _, ranks = data.candidate_sources(user_idx, items)
    assert ranks is not None and np.isfinite(ranks).any()
    got = scorer.score(ScoreInput(user_idx, np.zeros(data.item_factors.shape[1], np.float32),
                                  np.empty(0, np.int32), None, None, items,
                                  np.zeros(len(items), np.uint32)))  # fmt: skip
    np.testing.assert_allclose(got, fused_scores(ranks, weight_vector(weights)), rtol=1e-6)
    assert len(SOURCES) == len(weight_vector(weights))
    app = make_app(ranked, verify_checksums=False)
    assert app.test_client().get("/readyz").get_json()["scorer"] == "fused"
