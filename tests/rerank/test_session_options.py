"""The batch scorer and the service open the ranker with the same session options (the
quick check; tests/rerank/test_pipeline_ranker.py repeats it on a Spark-built bundle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.ranker.scorer import OnnxRanker
from online.bundle_loader import load_bundle
from online.scoring import OnnxScorer
from tests.online.bundle_factory import build_bundle
from tests.rerank.sessions import session_settings

pytest.importorskip("onnx")  # the factory writes the test model with it


def test_batch_and_service_sessions_have_the_same_options(tmp_path: Path) -> None:
    bundle = load_bundle(build_bundle(tmp_path, "run-r", with_ranker=True))
    assert isinstance(bundle.scorer, OnnxScorer) and bundle.ranker is not None
    online = session_settings(bundle.scorer.session)
    batch = session_settings(OnnxRanker(bundle.ranker.model.read_bytes()).session)
    assert online == batch
    assert online["intra_op_num_threads"] == online["inter_op_num_threads"] == "1"
    assert online["session.intra_op.allow_spinning"] == "0"
