"""Monitoring drills on the real server (`recsys serve`, 2 gunicorn workers, multiprocess
metrics), docs/monitoring.md:

* Drill 3, train/serve skew: a server whose feature code differs from training (the
  test-only RECSYS_TEST_FEATURE_SCALE multiplies log_pop_all by 3 after compute_features)
  samples every re-ranked request; /metrics shows recsys_feature_skew_psi for that feature
  above the alert threshold 0.2, while an untouched feature, and the same feature on a
  control server, stay below it.
* Drill 4, stale bundle: the control server serves a bundle published two days ago;
  recsys_bundle_age_seconds > 1.5 days (the alert's 129600 s) on every worker.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

import pytest
import requests

from shared.service_process import running_service
from tests.online.bundle_factory import build_bundle

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "RECSYS_BUDGET_MS": "10000", "RECSYS_SCORED_CACHE_SIZE": "0",
       "RECSYS_SKEW_SAMPLE_RATE": "1.0", "RECSYS_REALTIME": "memory"}  # fmt: skip
REQUESTS = 160  # both workers pass skew_min_requests (50) and skew_min_rows (200)
PSI_ALERT, AGE_ALERT = 0.2, 129_600.0
SCALED, CONTROL = "log_pop_all", "log_pop_30d"


def series(text: str, name: str, feature: str | None = None) -> list[float]:
    """Every worker's value of a gauge (multiprocess liveall: one series per pid)."""
    where = rf'feature="{feature}",' if feature else ""
    return [float(v) for v in re.findall(rf'^{name}\{{{where}pid="\d+"\}} (\S+)$', text, re.M)]


def other_features(text: str, feature: str) -> list[float]:
    """recsys_feature_skew_psi of every other feature (and the score), every worker."""
    found = re.findall(r'^recsys_feature_skew_psi\{feature="([^"]+)",pid="\d+"\} (\S+)$', text, re.M)
    assert len(found) > 20
    return [float(v) for name, v in found if name != feature]


def drive(art: Path, log: Path, env: dict[str, str]) -> str:
    """REQUESTS re-ranked requests on a fresh server, then its /metrics once the skew
    thread has binned every sample (the PSI is exported after the answers)."""
    with running_service(art, log, workers=2, env=env, cwd=REPO, ready_timeout_s=90,
                         stop_timeout_s=30) as service:  # fmt: skip
        for n in range(REQUESTS):  # a fresh connection each: both workers answer
            resp = requests.post(f"{service.base_url}/v1/recommendations", timeout=10,
                                 json={"user_id": f"u{n % 39}", "k": 10})  # fmt: skip
            assert resp.status_code == 200 and resp.json()["served_by"] == "rerank", resp.text
        for _ in range(100):
            text = requests.get(f"{service.base_url}/metrics", timeout=10).text
            done = sum(float(v) for v in re.findall(
                r'^recsys_skew_samples_total\{outcome="sampled"\} (\S+)$', text, re.M))
            if done >= REQUESTS and len(series(text, "recsys_feature_skew_psi", CONTROL)) == 2:
                time.sleep(1.5)  # the last samples' PSI: exported within a second
                return requests.get(f"{service.base_url}/metrics", timeout=10).text
            time.sleep(0.1)
        raise AssertionError(f"skew samples never all exported: {done}")


def test_skew_and_stale_bundle_drills(tmp_path: Path) -> None:
    skewed, stale = tmp_path / "skewed", tmp_path / "stale"
    build_bundle(skewed, "run-a", with_ranker=True, with_feature_stats=True)
    build_bundle(stale, "run-a", with_ranker=True, with_feature_stats=True,
                 created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))  # fmt: skip

    text = drive(skewed, tmp_path / "skewed.log", {**ENV, "RECSYS_TEST_FEATURE_SCALE": f"{SCALED}=3.0"})
    assert min(series(text, "recsys_feature_skew_psi", SCALED)) > PSI_ALERT  # each worker
    assert max(series(text, "recsys_feature_skew_psi", CONTROL)) < PSI_ALERT
    assert max(other_features(text, SCALED)) < PSI_ALERT  # only the skewed feature alerts
    assert max(series(text, "recsys_bundle_age_seconds")) < 3600  # published just now

    text = drive(stale, tmp_path / "stale.log", ENV)
    assert max(series(text, "recsys_feature_skew_psi", SCALED)) < PSI_ALERT  # control server
    assert max(other_features(text, SCALED)) < PSI_ALERT  # max(recsys_feature_skew_psi) quiet
    ages = series(text, "recsys_bundle_age_seconds")
    assert len(ages) == 2 and min(ages) > AGE_ALERT
