"""A bundle published by the previous release (before the `ease` source existed) is served
by this one as it was published: its source bits and candidate columns are read by name,
and its re-ranker, trained on a subset of today's features, is fed exactly its columns.

Without this, the upgrade that added a source refused the live bundle (rec_sources.json
"names bits ['ann', 'cooc', 'popular']") until the next nightly run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from online.bundle_loader import load_bundle
from online.scoring import ScoreInput
from shared import bundle_layout as layout
from shared.bundle import load_manifest, run_dir
from shared.errors import BundleError
from shared.features import FEATURE_NAMES
from shared.sources import SOURCES, bit, names_of
from tests.online.bundle_factory import build_bundle, resign

OLD_SOURCES = ("ann", "cooc", "popular")  # the previous release's SOURCES
NEW_FEATURES = ("score_ease", "rr_ease")  # the features it did not have


def _as_previous_release(bundle: Path, target: Path) -> Path:
    """The same bundle as the previous release wrote it: bits and candidate columns in
    OLD_SOURCES order, and a ranker over the features it knew."""
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(bundle, target)
    masks = np.load(target / layout.REC_SOURCES).astype(np.uint32)
    old = np.zeros_like(masks)
    for position, name in enumerate(OLD_SOURCES):
        old |= np.where(masks & np.uint32(bit(name)), np.uint32(1 << position), np.uint32(0))
    np.save(target / layout.REC_SOURCES, old.astype(np.load(target / layout.REC_SOURCES).dtype))
    (target / layout.REC_SOURCE_NAMES).write_text(json.dumps(list(OLD_SOURCES)))
    keep = [SOURCES.index(s) for s in OLD_SOURCES]
    for name in (layout.CANDIDATE_SCORES, layout.CANDIDATE_RANKS):
        np.save(target / name, np.ascontiguousarray(np.load(target / name)[:, keep]))
    names = [f for f in FEATURE_NAMES if f not in NEW_FEATURES]
    weights = np.zeros((len(names), 1), np.float32)
    weights[names.index("als_dot")] = 2.0  # the factory's model: score = 2 * als_dot
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["score"])], "ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(names)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec_path = target / layout.RANKER_SPEC
    spec = json.loads(spec_path.read_text()) | {"features": names}
    spec_path.write_text(json.dumps(spec))
    (target / layout.ranker_file(spec["model"])).write_bytes(model.SerializeToString())
    manifest = load_manifest(target).model_copy(update={"run_id": target.name})
    (target / layout.MANIFEST).write_text(manifest.model_dump_json())
    resign(target)
    return target


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    artifacts = tmp_path_factory.mktemp("release")
    today = build_bundle(artifacts, "run-today", with_ranker=True, publish=False)
    return today, _as_previous_release(today, run_dir(artifacts, "run-previous"))


def test_a_previous_release_bundle_is_served_as_published(bundles: tuple[Path, Path]) -> None:
    today, previous = (load_bundle(path) for path in bundles)
    assert previous.scorer.name == today.scorer.name == "onnx-int8"
    assert previous.scorer_fallback is None  # its model is used, not ALS
    assert previous.lists.source_names == OLD_SOURCES
    checked = 0
    for user_idx in today.user_index.values():
        mine, theirs = today.precomputed_list(user_idx), previous.precomputed_list(user_idx)
        if mine is None:
            continue
        assert theirs is not None and np.array_equal(mine.items, theirs.items)
        assert [names_of(int(m)) for m in theirs.sources] == [names_of(int(m)) for m in mine.sources]
        scores, ranks = previous.candidate_sources(user_idx, mine.items)
        expect_scores, expect_ranks = today.candidate_sources(user_idx, mine.items)
        assert scores is not None and expect_scores is not None and ranks is not None
        ease = SOURCES.index("ease")
        assert np.isnan(scores[:, ease]).all() and np.isnan(ranks[:, ease]).all()
        others = [SOURCES.index(s) for s in OLD_SOURCES]
        np.testing.assert_array_equal(scores[:, others], expect_scores[:, others])
        vector = np.asarray(today.user_factors[user_idx], dtype=np.float32)
        empty = np.empty(0, np.int32)
        args = (user_idx, vector, empty, None, None, mine.items, mine.sources)
        np.testing.assert_allclose(previous.scorer.score(ScoreInput(*args)),
                                   today.scorer.score(ScoreInput(*args)), rtol=1e-6)  # fmt: skip
        checked += 1
    assert checked >= 10


def test_a_bundle_naming_a_source_this_code_does_not_know_is_refused(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle = shutil.copytree(bundles[0], tmp_path / "run-future")
    (bundle / layout.REC_SOURCE_NAMES).write_text(json.dumps([*SOURCES[:3], "graph"]))
    resign(bundle)
    with pytest.raises(BundleError, match=r"rec_sources.json names bits .*graph"):
        load_bundle(bundle)


def test_a_model_over_a_feature_this_code_does_not_compute_falls_back_to_als(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle = shutil.copytree(bundles[0], tmp_path / "run-skew")
    spec_path = bundle / layout.RANKER_SPEC
    spec = json.loads(spec_path.read_text())
    spec["features"] = [*spec["features"][:-1], "minutes_since_lunch"]
    spec_path.write_text(json.dumps(spec))
    resign(bundle)
    loaded = load_bundle(bundle)
    assert loaded.scorer.name == "als-dot"
    assert loaded.scorer_fallback is not None and "minutes_since_lunch" in loaded.scorer_fallback
