"""Train/serve skew sampling (online/skew.py) on a real app over a small bundle with a
ranker and feature stats; the bounded queue; the bundle age derived at scrape time."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY

from online import metrics
from online.config import ServiceConfig
from online.ranker_features import TEST_FEATURE_SCALE_ENV, parse_feature_scale
from online.skew import DROPPED, SAMPLED, SkewMonitor, SkewSample
from shared.features import FEATURE_NAMES
from shared.parquet_log import part_files
from shared.skew_log import log_dir
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import make_app

SCALED, CONTROL = "log_pop_all", "log_pop_30d"


def samples(outcome: str) -> float:
    return REGISTRY.get_sample_value("recsys_skew_samples_total", {"outcome": outcome}) or 0.0


def serve(artifacts: Path, requests: int, **overrides: Any) -> SkewMonitor | None:
    app = make_app(artifacts, budget_ms=10_000, scored_cache_size=0, realtime="memory",
                   log_flush_seconds=0.05, skew_min_rows=200, skew_min_requests=20,
                   **overrides)  # fmt: skip
    service = app.extensions["recsys"]
    service.store.ensure_started()
    client = app.test_client()
    for n in range(requests):
        resp = client.post("/v1/recommendations", json={"user_id": f"u{n % 39}", "k": 10})
        assert resp.status_code == 200 and resp.get_json()["served_by"] == "rerank"
    if service.skew is not None:
        assert service.skew.wait_idle()
    service.close()
    service.store.stop()
    return service.skew  # type: ignore[no-any-return]


@pytest.fixture
def ranked(tmp_path: Path) -> Path:
    build_bundle(tmp_path, "run-a", with_ranker=True, with_feature_stats=True)
    return tmp_path


def test_a_feature_computed_differently_from_batch_shows_its_psi(
    ranked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_FEATURE_SCALE_ENV, f"{SCALED}=3.0")
    before = samples(SAMPLED)
    skew = serve(ranked, 60, skew_sample_rate=1.0)
    assert skew is not None
    assert samples(SAMPLED) - before == 60  # every re-ranked request, none dropped
    assert skew.psi[SCALED] > 1.0  # the alert threshold is 0.2
    assert skew.psi[CONTROL] < 0.05  # the same code as batch: noise only, floor subtracted
    rows = pa.concat_tables([pq.read_table(p) for p in part_files(log_dir(ranked))])
    assert rows.num_rows == 60 * 10  # skew_log_rows candidates of each sampled request
    assert len(set(rows["sample_id"].to_pylist())) == 60
    assert set(rows["bundle"].to_pylist()) == {"run-a"}
    pop = np.asarray(rows[SCALED].to_pylist())
    assert pop.max() > 3 * np.log1p(50)  # scaled values were logged as the model saw them


def test_below_the_minimum_of_rows_no_psi_is_exported(ranked: Path) -> None:
    skew = serve(ranked, 10, skew_sample_rate=1.0)  # 10 requests < skew_min_requests 20
    assert skew is not None and skew.psi == {}


def test_sampling_off_builds_no_monitor(ranked: Path) -> None:
    before = samples(SAMPLED)
    assert serve(ranked, 5, skew_sample_rate=0.0) is None
    assert samples(SAMPLED) == before


def test_a_full_queue_drops_the_sample_and_counts_it(tmp_path: Path) -> None:
    monitor = SkewMonitor(ServiceConfig(artifacts=tmp_path, skew_queue_size=1))
    busy, release = threading.Event(), threading.Event()

    def slow(sample: SkewSample) -> None:  # holds the thread, as a slow bin would
        busy.set()
        release.wait(10)

    monitor.process = slow  # type: ignore[method-assign]
    sample = SkewSample("run-a", "onnx-int8", {}, FEATURE_NAMES, np.zeros((3, len(FEATURE_NAMES)),
                        np.float32), np.zeros(3, np.float32), dt.datetime.now(dt.UTC))  # fmt: skip
    sampled, dropped = samples(SAMPLED), samples(DROPPED)
    assert monitor.offer(sample) == SAMPLED
    assert busy.wait(10)  # the thread holds the first one
    assert monitor.offer(sample) == SAMPLED  # the queue's one slot
    assert monitor.offer(sample) == DROPPED
    assert monitor.offer(sample) == DROPPED
    assert (samples(SAMPLED) - sampled, samples(DROPPED) - dropped) == (2, 2)
    release.set()
    assert monitor.wait_idle()
    monitor.close()
    assert monitor.offer(sample) == DROPPED  # closed: never queued again


def test_the_test_scale_hook_accepts_only_known_features() -> None:
    assert parse_feature_scale(None) == {}
    assert parse_feature_scale(f"{SCALED}=3, {CONTROL}=0.5") == {
        FEATURE_NAMES.index(SCALED): 3.0, FEATURE_NAMES.index(CONTROL): 0.5}
    with pytest.raises(ValueError, match="not <feature>=<factor>"):
        parse_feature_scale("no_such_feature=2")


def test_bundle_age_is_computed_at_scrape_time(tmp_path: Path) -> None:
    two_days = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    build_bundle(tmp_path, "run-old", created_at=two_days)
    app = make_app(tmp_path)
    app.extensions["recsys"].store.ensure_started()
    text = metrics.render().decode()
    age = next(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("recsys_bundle_age_seconds"))  # fmt: skip
    assert 2 * 86400 - 60 < age < 2 * 86400 + 60
    app.extensions["recsys"].store.stop()
