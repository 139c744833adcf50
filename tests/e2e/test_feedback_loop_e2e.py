"""The loop, end to end on real components: events posted to a real server change the
user's next answer at once (real-time store), reach the event log, the warehouse's `events`
and `exposures`, the next nightly run (real Spark: per-type counts, ignored impressions as the re-ranker's
negatives, switched off and on, dislikes out of the disliker's list), and that run's answer.

Synthetic users with the tiny data set's hidden tastes (batch/simulate) supply the traffic.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from batch.context import RunContext
from batch.data.generate import GenerateConfig
from batch.pipeline.runner import PipelineRunner
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.client import ServiceClient
from batch.simulate.day import simulate_day
from batch.simulate.truth import GroundTruth
from shared import bundle_layout as layout
from shared.bundle import current_bundle
from shared.events import EVENT_LOG_DIR
from shared.warehouse import analyst_warehouse_path
from tests.conftest import TINY_RUN_DATE, run_pipeline, tiny_config
from tests.e2e.test_service_e2e import running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.spark,
]


def _tiny_truth(data: Path) -> GroundTruth:
    # The same world tests/conftest.py::generate_tiny writes.
    return GroundTruth.from_config(GenerateConfig(out_dir=data, n_users=300, n_items=400,
                                                  n_events=15_000, seed=7, end_date=TINY_RUN_DATE,
                                                  days=120, n_regions=3))  # fmt: skip


def _event_ids(artifacts: Path) -> list[str]:
    files = sorted((artifacts / EVENT_LOG_DIR).glob("date=*/part-*.parquet"))
    return [i for f in files for i in pq.read_table(f, columns=["event_id"])["event_id"].to_pylist()]


def test_events_change_the_next_answer_tonight_and_tomorrow(
    spark: object, tiny_data: Path, pipeline_artifacts: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline_artifacts, artifacts, symlinks=True)
    first_bundle = current_bundle(artifacts).name
    truth = _tiny_truth(tiny_data)
    rng = np.random.default_rng(3)
    users = list(rng.choice(truth.user_ids, size=60, replace=False))
    watcher = users[0]

    with running_server(artifacts, tmp_path / "serve.log", reload_poll_seconds=0) as base:
        client = ServiceClient(base)
        before = client.recommend(watcher, 10)
        watched = before["items"][0]["item_id"]
        disliked = [row["item_id"] for row in before["items"][1:4]]
        ack = client.post_events([{"event_id": "loop-play-1", "type": "play", "user_id": watcher,
                                   "item_id": watched, "request_id": before["request_id"]}]
                                 + [{"event_id": f"loop-dislike-{n}", "type": "dislike",
                                     "user_id": watcher, "item_id": item}
                                    for n, item in enumerate(disliked)])  # fmt: skip
        assert ack["accepted"] == 1 + len(disliked)
        # A retry of the same event is acknowledged and not counted twice.
        assert client.post_events([{"event_id": "loop-play-1", "type": "play", "user_id": watcher,
                                    "item_id": watched}])["accepted"] == 0  # fmt: skip
        after = client.recommend(watcher, 10)  # the next answer, on any worker
        assert not {watched, *disliked} & {i["item_id"] for i in after["items"]}
        stats = simulate_day(client, truth, BehaviourModel(), users[1:], 1, rng)
    assert stats.requests == len(users) - 1 and stats.clicks > 0 and stats.plays > 0

    logged = _event_ids(artifacts)  # the clean stop wrote every buffered event
    assert len(logged) == len(set(logged)) == stats.events_posted + 1 + len(disliked)
    assert "loop-play-1" in logged

    tomorrow = dt.datetime.now(dt.UTC).date()
    results = run_pipeline(spark, tiny_data, artifacts, run_date=tomorrow)
    second_bundle = current_bundle(artifacts).name
    assert second_bundle != first_bundle
    # Every logged event reached the night: engagement as interactions, the rest as feedback.
    by_type = {"impression": stats.impressions, "click": stats.clicks, "play": stats.plays + 1,
               "complete": stats.completes, "dislike": stats.dislikes + len(disliked)}  # fmt: skip
    assert results["validate"]["events"]["by_type"] == {t: n for t, n in by_type.items() if n}  # type: ignore[index]
    # Ignored impressions and dislikes are the re-ranker's explicit negatives ...
    sample = results["features"]["sample"]
    explicit_on = int(sample["explicit_negatives"])  # type: ignore[index]
    assert 0 < explicit_on <= stats.impressions - stats.clicks + stats.dislikes + len(disliked)
    # ... and without them the same users and positives, from the sampled pool alone.
    off_ctx = RunContext(tiny_data, artifacts, tomorrow,
                         tiny_config(ranker={"impression_negatives": False}))  # type: ignore[arg-type]
    off = PipelineRunner(off_ctx, spark=spark).run_stage("features")["sample"]
    assert off["explicit_negatives"] == 0  # type: ignore[index]
    assert (off["users"], off["positives"]) == (sample["users"], sample["positives"])  # type: ignore[index]
    # They are added on top of the sampled candidates, never in place of one.
    assert off["rows"] <= sample["rows"] <= off["rows"] + explicit_on  # type: ignore[index,operator]
    # Dislikes leave the disliker's published list, and only theirs.
    recs = pq.read_table(current_bundle(artifacts) / layout.RECOMMENDATIONS).to_pandas()
    lists = recs.groupby("user_id")["item_id"].agg(set)
    for user, item in [*stats.disliked_items, *((watcher, i) for i in disliked)]:
        assert item not in lists.get(user, set())
    assert any(item in items for user, items in lists.items() if user != watcher for item in disliked)

    with duckdb.connect(str(analyst_warehouse_path(artifacts)), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM analyst.events").fetchone()[0]
        clicks, attributed_plays = con.execute(
            "SELECT count(*) FILTER (WHERE clicked), count(*) FILTER (WHERE played) "
            "FROM analyst.exposures WHERE bundle = ?", [first_bundle]
        ).fetchone()
    assert events == len(logged)
    assert clicks == stats.clicks  # every click joined to the row that showed it
    assert attributed_plays == stats.plays + 1

    with running_server(artifacts, tmp_path / "serve2.log", reload_poll_seconds=0,
                        RECSYS_REALTIME="off") as base:  # fmt: skip
        # No real-time state now: the new bundle itself has learned the play.
        nightly = ServiceClient(base).recommend(watcher, 10)
    assert nightly["bundle"] == second_bundle
    assert watched not in [i["item_id"] for i in nightly["items"]]
