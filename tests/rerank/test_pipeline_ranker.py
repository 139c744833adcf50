"""The re-ranker inside the real pipeline (tiny generated set): what the bundle ships, and
no train/serve skew: the service's own scorer, as online/bundle_loader returns it (its
feature builder and its ONNX session), reproduces the batch scores of the published
candidates and the published lists; both sides open the model with the same options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from batch.ranker.batch_scoring import score_candidates, source_matrices
from batch.ranker.scorer import OnnxRanker
from online.bundle_loader import LoadedBundle, load_bundle
from online.ranker_features import RankerFeatures
from online.scoring import OnnxScorer, ScoreInput
from shared import bundle_layout as layout
from shared.bundle import current_bundle, load_manifest
from shared.feature_arrays import load_feature_arrays
from shared.features import FEATURE_NAMES, compute_features
from tests.conftest import TINY_RUN_DATE
from tests.rerank.sessions import session_settings

pytestmark = pytest.mark.spark

SAMPLE_USERS = 12


@pytest.fixture(scope="module")
def served(pipeline_artifacts: Path) -> LoadedBundle:
    """The bundle exactly as a service worker loads it."""
    return load_bundle(current_bundle(pipeline_artifacts))


def test_bundle_ships_the_ranker(pipeline_artifacts: Path, served: LoadedBundle) -> None:
    bundle = current_bundle(pipeline_artifacts)
    assert served.ranker is not None and served.ranker_problem is None
    spec = served.ranker.spec
    assert spec["features"] == list(FEATURE_NAMES)
    assert spec["model"] in layout.RANKER_MODELS
    assert spec["input"] == "features" and spec["output"] == "score"
    assert {"ndcg@10_fp32", "ndcg@10_int8", "spearman", "passed"} <= set(spec["parity"])
    if spec["model"] == layout.MODEL_FP32:
        assert spec["fp32_reason"]
    for name in layout.RANKER_MODELS:
        graph = onnx.load(str(bundle / layout.ranker_file(name))).graph
        assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == len(FEATURE_NAMES)
    metrics = load_manifest(bundle).metrics["reranker"]
    assert metrics["status"] == "reranked" and metrics["shipped"] in ("int8", "fp32")
    assert {"fused", "reranked_fp32", "reranked_int8"} <= set(metrics["lists"])
    assert isinstance(served.scorer, OnnxScorer) and served.scorer_fallback is None


def test_batch_and_service_open_the_model_with_the_same_options(served: LoadedBundle) -> None:
    assert isinstance(served.scorer, OnnxScorer) and served.ranker is not None
    batch = OnnxRanker(served.ranker.model.read_bytes())  # as the Spark scoring tasks do
    assert session_settings(served.scorer.session) == session_settings(batch.session)


def test_service_scorer_reproduces_the_batch_scores_and_lists(
    spark: Any, pipeline_artifacts: Path, served: LoadedBundle
) -> None:
    """For a sample of users: the request path's scorer (ScoreInput as Recommender._score
    builds it: the user's factors, no request context) on the user's published candidates
    gives the scores the batch Spark job gives them (1e-5) and, ranked, the published list
    (the same items in the same order, the same scores)."""
    assert isinstance(served.scorer, OnnxScorer) and served.ranker is not None
    features = served.scorer.features
    assert isinstance(features, RankerFeatures)
    with_lists = [u for u in range(served.n_users) if served.precomputed_list(u) is not None]
    users = with_lists[:: max(1, len(with_lists) // SAMPLE_USERS)][:SAMPLE_USERS]
    assert len(users) == SAMPLE_USERS

    # The batch side: its own Spark scoring job over the published candidate table, with
    # the features stage's arrays (work/, not the bundle's copy).
    features_dir = pipeline_artifacts / "work" / TINY_RUN_DATE.isoformat() / "features" / "full"
    table = spark.read.parquet(str(served.path / layout.CANDIDATES))
    table = table.where(table.user_idx.isin(users))
    model = served.ranker.model.read_bytes()
    batch = score_candidates(table, features_dir, {"model": model}, partitions=2).toPandas()
    candidates = table.toPandas().sort_values(["user_idx", "item_idx"])
    batch_arrays = load_feature_arrays(features_dir)

    for user in users:
        lo, hi = int(served.candidates.indptr[user]), int(served.candidates.indptr[user + 1])
        items = np.asarray(served.candidates.items[lo:hi])
        rows = batch[batch.user_idx == user].sort_values("item_idx")
        assert rows["item_idx"].tolist() == items.tolist()
        inputs = ScoreInput(
            user, np.asarray(served.user_factors[user], np.float32), np.empty(0, np.int32),
            served.user_region[user], None, items, np.zeros(len(items), np.uint32),
        )  # fmt: skip
        # The same feature vectors as the batch side builds from its candidate columns.
        mine = candidates[candidates.user_idx == user]
        x_batch = compute_features(batch_arrays, user, items, *source_matrices(mine))
        assert features(inputs, list(FEATURE_NAMES)).tobytes() == x_batch.tobytes()

        got = served.scorer.score(inputs)
        np.testing.assert_allclose(got, rows["score_model"].to_numpy(), rtol=0, atol=1e-5)
        published = served.precomputed_list(user)
        assert published is not None
        order = np.lexsort((items, -got))[: len(published.items)]
        assert items[order].tolist() == published.items.tolist()
        np.testing.assert_allclose(got[order], published.scores, rtol=0, atol=1e-5)
