"""The volume drill through the real runner: validate (Spark) then the drift stage on a day
with half its usual events. The run stops at drift, before any training, with the check,
its value and threshold in the message; CURRENT stays on the last good bundle and the
failed run's checks are in the history the warehouse reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.data import drift_drills
from batch.data.generate import GenerateConfig, generate
from batch.drift import store
from shared.bundle import read_current, write_current
from shared.errors import InputDriftFailed
from tests.conftest import TINY_RUN_DATE, run_pipeline, tiny_config

pytestmark = pytest.mark.spark


def test_half_the_events_stops_the_run_before_training_and_current_stays(
        spark: object, tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    generate(GenerateConfig(out_dir=data, n_users=400, n_items=300, n_events=20_000, seed=5,
                            end_date=TINY_RUN_DATE, days=20, n_regions=2))
    path = data / "interactions.parquet"
    pq.write_table(drift_drills.thin_day(pq.read_table(path), TINY_RUN_DATE, 0.5, seed=1), path)
    art = tmp_path / "art"
    art.mkdir()
    write_current(art, "2025-12-30-lastgood")
    with pytest.raises(InputDriftFailed, match=r"drift check volume_drop: value 0\.\d+ > "
                       r"threshold 0\.4 \(run date \d+ events, median of the 7 days before"):
        run_pipeline(spark, data, art, tiny_config())
    assert read_current(art) == "2025-12-30-lastgood"
    work = art / "work" / TINY_RUN_DATE.isoformat()
    assert (work / "drift" / "drift.json").exists() and not (work / "embeddings").exists()
    assert not (art / "runs").exists()
    history = store.read_history(art).to_pylist()
    drop = next(r for r in history if r["check"] == "volume_drop")
    assert drop["status"] == "fail" and drop["action"] == "fail" and 0.4 < drop["value"] < 0.6
    assert {r["status"] for r in history if r["check"].startswith("item_")} == {"skipped"}


def test_a_published_run_carries_its_drift_checks_and_becomes_the_next_reference(
        pipeline_artifacts: Path) -> None:  # fmt: skip
    import duckdb

    from shared.bundle import current_bundle, load_manifest
    from shared.warehouse import warehouse_path

    manifest = load_manifest(current_bundle(pipeline_artifacts))
    drift = manifest.extra["drift"]
    assert drift["run_id"] == manifest.run_id and drift["failures"] == []
    assert drift["notes"] == ["first run: no previous published run, comparisons with it skipped"]
    names = {c["check"] for c in drift["checks"]}
    assert {"volume_drop", "item_psi_prev", "freshness_hours"} <= names
    # the tiny data set (~125 events a day) is below drift.min_daily_events: skipped, not failed
    assert next(c for c in drift["checks"] if c["check"] == "volume_drop")["status"] == "skipped"
    assert (store.profiles_root(pipeline_artifacts) / manifest.run_id / "meta.json").exists()
    con = duckdb.connect(str(warehouse_path(pipeline_artifacts)), read_only=True)
    try:
        rows = con.execute('SELECT count(*), count(DISTINCT run_id) FROM drift').fetchone()
    finally:
        con.close()
    assert rows == (len(drift["checks"]), 1)
