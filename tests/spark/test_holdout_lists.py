"""The harness reads a real run's lists as the bundle ships them (on the suite's pipeline
run over the tiny generated set: no second pipeline run)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.evaluation.holdout import run_lists
from shared.bundle import current_bundle
from shared.sources import SOURCES
from tests.conftest import TINY_RUN_DATE

pytestmark = pytest.mark.spark


def test_run_lists_are_the_published_lists_and_the_candidates_orders(pipeline_artifacts: Path) -> None:
    work = pipeline_artifacts / "work" / TINY_RUN_DATE.isoformat()
    lists = run_lists(work)
    assert set(lists) == {"published", "fused", *SOURCES}
    bundle = current_bundle(pipeline_artifacts)
    recs = pq.read_table(bundle / "recommendations.parquet").to_pandas()
    top = recs[recs["rank"] <= 10].sort_values(["user_id", "rank"])
    got = lists["published"].sort_values(["user_id", "rank"])
    assert got["user_id"].tolist() == top["user_id"].astype(str).tolist()
    assert got["item_id"].tolist() == top["item_id"].astype(str).tolist()
    cands = pq.read_table(bundle / "candidates.parquet").to_pandas()
    n_users = cands["user_idx"].nunique()
    for name, frame in lists.items():
        assert frame["rank"].between(1, 10).all(), name
        assert not frame.duplicated(["user_id", "item_id"]).any(), name
        assert frame["user_id"].nunique() <= n_users
    # the fused order: the candidates by fused_score, ties by item
    user = cands["user_idx"].min()
    own = cands[cands["user_idx"] == user].sort_values(["fused_score", "item_idx"],
                                                        ascending=[False, True]).head(10)
    items = pq.read_table(bundle / "items.parquet", columns=["item_idx", "item_id"]).to_pandas()
    want = own.merge(items, on="item_idx", how="left")["item_id"].astype(str).tolist()
    users = pq.read_table(bundle / "users.parquet", columns=["user_idx", "user_id"]).to_pandas()
    uid = str(users.loc[users["user_idx"] == user, "user_id"].iloc[0])
    fused = lists["fused"]
    assert fused.loc[fused["user_id"] == uid].sort_values("rank")["item_id"].tolist() == want
