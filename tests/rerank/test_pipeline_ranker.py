"""The re-ranker inside the real pipeline (tiny generated set): what the bundle ships, and
no train/serve skew: the service's path (bundle arrays + shared.features + onnxruntime)
reproduces the published lists and the batch feature vectors exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from batch.stages import RunOutputs
from batch.stages.outputs import work_dir
from shared.bundle import current_bundle, load_manifest
from shared.features import FEATURE_NAMES, compute_features, load_feature_arrays
from shared.onnx_session import create_session
from shared.sources import RANK_COLUMNS, SCORE_COLUMNS
from tests.conftest import TINY_RUN_DATE

pytestmark = pytest.mark.spark


def _candidates(bundle: Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cands = pq.read_table(bundle / "candidates.parquet").to_pandas()
    out = {}
    for user, g in cands.groupby("user_idx"):
        scores = g[list(SCORE_COLUMNS)].to_numpy(np.float64, na_value=np.nan)
        ranks = g[list(RANK_COLUMNS)].to_numpy(np.float64, na_value=np.nan)
        out[int(user)] = (g["item_idx"].to_numpy(), scores, ranks)
    return out


def test_bundle_ships_the_ranker(pipeline_artifacts: Path) -> None:
    bundle = current_bundle(pipeline_artifacts)
    spec = json.loads((bundle / "ranker" / "spec.json").read_text())
    assert spec["features"] == list(FEATURE_NAMES)
    assert spec["model"] in ("model.int8.onnx", "model.fp32.onnx")
    assert spec["input"] == "features" and spec["output"] == "score"
    assert {"ndcg@10_fp32", "ndcg@10_int8", "spearman", "passed"} <= set(spec["parity"])
    if spec["model"] == "model.fp32.onnx":
        assert spec["fp32_reason"]
    for name in ("model.fp32.onnx", "model.int8.onnx"):
        graph = onnx.load(str(bundle / "ranker" / name)).graph
        assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == len(FEATURE_NAMES)
    metrics = load_manifest(bundle).metrics["reranker"]
    assert metrics["status"] == "reranked" and metrics["shipped"] in ("int8", "fp32")
    assert {"fused", "reranked_fp32", "reranked_int8"} <= set(metrics["lists"])


def test_online_path_reproduces_the_published_lists(pipeline_artifacts: Path) -> None:
    bundle = current_bundle(pipeline_artifacts)
    spec = json.loads((bundle / "ranker" / "spec.json").read_text())
    online = load_feature_arrays(bundle / "features", factors_dir=bundle)
    work = work_dir(pipeline_artifacts, TINY_RUN_DATE.isoformat())
    batch = load_feature_arrays(RunOutputs(work).features.arrays("full"))
    session = create_session(ort, bundle / "ranker" / spec["model"])
    recs = pq.read_table(bundle / "recommendations.parquet").to_pandas()
    candidates = _candidates(bundle)
    for user in sorted(candidates)[:8]:
        items, scores, ranks = candidates[user]
        x = compute_features(online, user, items, scores, ranks)
        assert x.tobytes() == compute_features(batch, user, items, scores, ranks).tobytes()
        (got,) = session.run([spec["output"]], {spec["input"]: x})
        order = np.lexsort((items, -got))[:100]
        published = recs[recs.user_idx == user].sort_values("rank")
        assert published["item_idx"].tolist() == items[order].tolist()
        np.testing.assert_allclose(published["score"].to_numpy(), got[order], rtol=1e-6, atol=1e-6)
