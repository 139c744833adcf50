"""The re-ranker model: learns a planted signal, exports the shared feature contract to
ONNX, and its int8 versions rank like fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from batch.ranker import quantize
from batch.ranker.model import INPUT_NAME, OUTPUT_NAME, export_onnx, spearman
from batch.ranker.scorer import OnnxRanker
from batch.ranker.train import TrainingData, train_ranker
from shared.config import RankerConfig
from shared.features import FEATURE_NAMES, N_FEATURES
from shared.metrics import grouped_ndcg

PLANTED = FEATURE_NAMES.index("cooc_sum")


def planted_data(n_users: int = 120, per_user: int = 60, seed: int = 0) -> TrainingData:
    """Noise everywhere except one feature, which is high exactly for the relevant items."""
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = np.zeros(n, np.float32)
    user = np.repeat(np.arange(n_users), per_user)
    relevant = rng.random(n) < 0.08
    y[relevant] = 1.0
    x[:, PLANTED] = rng.normal(size=n) + 4.0 * relevant
    n_rel = np.bincount(user, weights=y).astype(np.int64)[user]
    return TrainingData(x=x, y=y, user=user, is_val=user % 5 == 0, n_rel=np.maximum(n_rel, 1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingData, Path, dict[str, object]]:
    data = planted_data()
    model, report = train_ranker(data, RankerConfig(max_epochs=8, patience=3))
    out = tmp_path_factory.mktemp("ranker")
    export_onnx(model, N_FEATURES, out / "model.fp32.onnx")
    return data, out, report


def test_planted_items_rank_first(trained: tuple[TrainingData, Path, dict[str, object]]) -> None:
    data, out, report = trained
    val = data.subset(data.is_val)
    scores = OnnxRanker(out / "model.fp32.onnx").score(val.x)
    random_order = grouped_ndcg(val.user, np.random.default_rng(1).random(len(val.y)), val.y, val.n_rel)
    oracle = grouped_ndcg(val.user, val.x[:, PLANTED], val.y, val.n_rel)  # the planted feature
    got = grouped_ndcg(val.user, scores, val.y, val.n_rel)
    assert got > 0.88 * oracle and oracle > 0.8 > 0.3 > random_order
    assert float(report["val_ndcg@10"]) == pytest.approx(got, abs=1e-3)  # type: ignore[arg-type]


def test_training_is_deterministic() -> None:
    data = planted_data(n_users=40)
    cfg = RankerConfig(max_epochs=2, patience=1)
    (a, _), (b, _) = train_ranker(data, cfg), train_ranker(data, cfg)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert np.array_equal(pa.numpy(), pb.numpy()), name


def test_onnx_inputs_match_the_feature_definitions(trained: tuple[TrainingData, Path, dict[str, object]]) -> None:
    _, out, _ = trained
    graph = onnx.load(str(out / "model.fp32.onnx")).graph
    (inp,), (outp,) = graph.input, graph.output
    assert inp.name == INPUT_NAME and outp.name == OUTPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param and dims[1].dim_value == len(FEATURE_NAMES)  # dynamic batch, F
    assert len(outp.type.tensor_type.shape.dim) == 1
    for n in (1, 7, 1000):  # any batch size, one score per row
        assert OnnxRanker(out / "model.fp32.onnx").score(np.zeros((n, N_FEATURES), np.float32)).shape == (n,)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_int8_ranks_like_fp32(trained: tuple[TrainingData, Path, dict[str, object]], kind: str) -> None:
    data, out, _ = trained
    int8 = out / f"model.int8-{kind}.onnx"
    if kind == "dynamic":
        quantize.quantize_dynamic(out / "model.fp32.onnx", int8)
    else:
        train = data.subset(~data.is_val)
        quantize.quantize_static(out / "model.fp32.onnx", int8, quantize.calibration_sample(train.x, 2000, 0))
    val = data.subset(data.is_val)
    ref = OnnxRanker(out / "model.fp32.onnx").score(val.x)
    got = OnnxRanker(int8).score(val.x)
    assert spearman(got, ref) > 0.99
    ndcg_ref = grouped_ndcg(val.user, ref, val.y, val.n_rel)
    assert grouped_ndcg(val.user, got, val.y, val.n_rel) >= 0.99 * ndcg_ref
    assert int8.stat().st_size < (out / "model.fp32.onnx").stat().st_size
