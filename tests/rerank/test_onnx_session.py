"""One ONNX Runtime session factory (shared/onnx_session.py): every caller's session has the
same options, nobody builds options of their own, and spinning never changes a score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from batch.ranker.scorer import OnnxRanker
from online.scoring import OnnxScorer
from shared.onnx_session import SETTINGS, SessionSettings, create_session, session_options

REPO = Path(__file__).resolve().parents[2]
N_IN = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """score = relu(x W1 + b1) w2: the re-ranker's shape, small."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(size=(N_IN, 16))), ("b1", rng.normal(size=16)),
        ("w2", rng.normal(size=(16, 1))))]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "shape"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w1"], ["h"]),
         helper.make_node("Add", ["h", "b1"], ["hb"]),
         helper.make_node("Relu", ["hb"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["s"]),
         helper.make_node("Reshape", ["s", "shape"], ["score"])],
        "tiny", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", N_IN])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])], inits)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _described(session: ort.InferenceSession) -> dict[str, object]:
    options = session.get_session_options()
    return {
        "intra": options.intra_op_num_threads,
        "inter": options.inter_op_num_threads,
        "mode": options.execution_mode,
        **{key: options.get_session_config_entry(key) for key in SETTINGS.config_entries()},
        "providers": session.get_providers(),
    }


def test_batch_and_online_sessions_have_the_same_options(model: Path) -> None:
    batch = OnnxRanker(model).session
    online = OnnxScorer(model, {"model": "model.int8.onnx", "features": []}, lambda i, n: i).session
    from_bytes = OnnxRanker(model.read_bytes()).session  # as the Spark scoring tasks load it
    want = {"intra": 1, "inter": 1, "mode": ort.ExecutionMode.ORT_SEQUENTIAL,
            "session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0",
            "providers": ["CPUExecutionProvider"]}
    assert _described(batch) == _described(online) == _described(from_bytes) == want
    assert _described(create_session(ort, model)) == want


def test_profiling_is_the_only_extra_the_bench_gets() -> None:
    options = session_options(ort, profile_prefix="/tmp/x")
    assert options.enable_profiling and options.intra_op_num_threads == 1
    assert not session_options(ort).enable_profiling


def test_spinning_never_changes_a_score(model: Path) -> None:
    x = np.random.default_rng(1).normal(size=(1000, N_IN)).astype(np.float32)
    scores = [
        create_session(ort, model, settings).run(["score"], {"features": x})[0]
        for settings in (SETTINGS, SessionSettings(allow_spinning=True))
    ]
    assert scores[0].shape == (1000,) and scores[0].tobytes() == scores[1].tobytes()


def test_no_caller_builds_its_own_session_options() -> None:
    needles = ("Session" + "Options(", "Inference" + "Session(")
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("batch", "online", "shared", "bench", "dags", "tests", "scripts")
        for path in (REPO / folder).rglob("*.py")
        if path != REPO / "shared" / "onnx_session.py"
        and any(n in path.read_text() for n in needles)
    ]
    assert offenders == []
