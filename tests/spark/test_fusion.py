"""The Spark mirror of shared/fusion.py gives the same bits as numpy, and the fusion weight
search sees the same candidates either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batch.spark import fusion as spark_fusion
from shared import fusion
from shared.sources import RANK_COLUMNS, SOURCES

pytestmark = pytest.mark.spark


def _random_ranks(n: int = 3000, seed: int = 11) -> np.ndarray:
    """float ranks [n, len(SOURCES)] in 1..500, NaN (not proposed) for about a third."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, 501, (n, len(SOURCES))).astype(np.float64)
    ranks[rng.random(ranks.shape) < 0.35] = np.nan
    return ranks


@pytest.mark.parametrize("weights", [
    {"ann": 1.0, "cooc": 1.0, "popular": 0.3},
    {"ann": 0.25, "cooc": 2.0, "popular": 0.0},
    {"ann": 0.3, "cooc": 1.0, "popular": 0.5, "unknown": 7.0},
])
def test_spark_fused_score_is_the_numpy_one_to_the_bit(spark, weights: dict[str, float]) -> None:
    ranks = _random_ranks()
    rows = [(i, *[None if np.isnan(r) else int(r) for r in row]) for i, row in enumerate(ranks)]
    schema = "row int, " + ", ".join(f"{c} int" for c in RANK_COLUMNS)
    got = (
        spark_fusion.with_fused_score(spark.createDataFrame(rows, schema), weights)
        .orderBy("row").select("fused_score").toPandas()["fused_score"].to_numpy(np.float32)
    )
    want = fusion.fused_scores(ranks, fusion.weight_vector(weights)).astype(np.float32)
    assert got.tobytes() == want.tobytes()


def test_the_weight_search_in_spark_is_the_numpy_one(spark) -> None:
    rng = np.random.default_rng(2)
    ranks = _random_ranks(n=1200, seed=3)
    users = np.repeat(np.arange(40), 30)
    items = np.tile(np.arange(30), 40)
    relevant = rng.random(users.size) < 0.1
    relevant[::30] = True  # every user has a relevant item among its candidates
    held_out = [(int(u), int(i)) for u, i in zip(users[relevant], items[relevant], strict=True)]
    held_out += [(3, 999), (100, 5)]  # user 3: one more held out; user 100: no candidates
    rows = [(int(u), int(i), *[None if np.isnan(r) else int(r) for r in row])
            for u, i, row in zip(users, items, ranks, strict=True)]
    candidates = spark.createDataFrame(
        rows, "user_idx int, item_idx int, " + ", ".join(f"{c} int" for c in RANK_COLUMNS))
    test = spark.createDataFrame(held_out, "user_idx int, item_idx int")
    start = {"ann": 1.0, "cooc": 1.0, "popular": 0.3}
    got_weights, got_ndcg = spark_fusion.tune_weights(candidates, test, start)

    n_rel = np.bincount(np.array([u for u, _ in held_out]), minlength=101)
    want, want_ndcg = fusion.tune_weights(users, ranks, relevant, n_rel[users], 41,
                                          fusion.weight_vector(start))
    assert got_weights == fusion.weight_dict(want)
    assert got_ndcg == pytest.approx(want_ndcg, abs=1e-12)


def test_a_retuned_eval_variant_gets_its_fused_score_rewritten(spark, tmp_path: Path) -> None:
    from batch.stages.candidates import _rewrite_fused

    ranks = _random_ranks(n=500, seed=5)
    rows = [(i // 10, i % 10, *[None if np.isnan(r) else int(r) for r in row], 0.0)
            for i, row in enumerate(ranks)]
    schema = "user_idx int, item_idx int, " + ", ".join(f"{c} int" for c in RANK_COLUMNS) \
        + ", fused_score float"
    path = tmp_path / "candidates.parquet"
    spark.createDataFrame(rows, schema).repartition(3).sortWithinPartitions("user_idx", "item_idx") \
        .write.parquet(str(path))
    weights = {"ann": 0.5, "cooc": 2.0, "popular": 0.0}
    _rewrite_fused(spark, path, weights)
    got = spark.read.parquet(str(path)).orderBy("user_idx", "item_idx").toPandas()
    assert len(got) == len(rows) and not (path.parent / "candidates.parquet.tmp").exists()
    want = fusion.fused_scores(ranks, fusion.weight_vector(weights)).astype(np.float32)
    assert got["fused_score"].to_numpy(np.float32).tobytes() == want.tobytes()


def test_every_fused_score_the_pipeline_writes_uses_the_tuned_weights(pipeline_artifacts: Path) -> None:
    """The bundle's candidates and every variant's in the work dir: fused with the weights
    the candidates stage tuned (metrics.fusion), not the configured ones."""
    import pyarrow.parquet as pq

    from shared.bundle import current_bundle, load_manifest
    from tests.conftest import TINY_RUN_DATE

    bundle = current_bundle(pipeline_artifacts)
    weights = load_manifest(bundle).metrics["fusion"]["weights"]
    work = pipeline_artifacts / "work" / TINY_RUN_DATE.isoformat() / "candidates"
    assert json.loads((work / "fusion.json").read_text())["weights"] == weights
    tables = [bundle / "candidates.parquet", *sorted(work.glob("*/candidates.parquet"))]
    assert len(tables) == 4
    for path in tables:
        table = pq.read_table(path).to_pandas()
        ranks = table[list(RANK_COLUMNS)].to_numpy(np.float64, na_value=np.nan)
        want = fusion.fused_scores(ranks, fusion.weight_vector(weights)).astype(np.float32)
        assert table["fused_score"].to_numpy(np.float32).tobytes() == want.tobytes(), path
