"""The real server: `recsys serve` (gunicorn, 2 workers) on loopback, end to end."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests

from shared import bundle_layout as layout
from shared.bundle import current_bundle, run_dir, write_current
from shared.request_log import log_dir, part_files
from shared.service_process import running_service
from tests.e2e.conftest import publish_clone
from tests.online.bundle_factory import corrupt

# Spark too: the bundle comes from the pipeline_artifacts fixture (getfixturevalue, which
# the conftest's marking cannot see) unless SERVICE_E2E_SYNTHETIC=1.
pytestmark = [pytest.mark.e2e, pytest.mark.spark]

TOKEN = "e2e-token"


@contextlib.contextmanager
def running_server(
    artifacts: Path, log_path: Path, *, ready_path: str = "/readyz",
    admin_token: str | None = TOKEN, reload_poll_seconds: float = 1, **env_overrides: str,
) -> Iterator[str]:
    """`recsys serve` (2 gunicorn workers) on a free loopback port until the block ends,
    yielded once `ready_path` answers 200 (/healthz for a server that never gets a bundle)."""
    args = [*(["--admin-token", admin_token] if admin_token is not None else []),
            "--reload-poll-seconds", str(reload_poll_seconds)]  # fmt: skip
    env = {"RECSYS_REQUEST_LOG_ROTATE_SECONDS": "2", **env_overrides}
    with running_service(artifacts, log_path, args=args, env=env, ready_path=ready_path,
                         ready_timeout_s=90, stop_timeout_s=30) as service:  # fmt: skip
        yield service.base_url


@pytest.fixture(scope="module")
def server(service_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(service_artifacts, log) as base:
        yield base


@pytest.fixture(scope="module")
def ids(service_artifacts: Path) -> dict[str, str]:
    bundle = current_bundle(service_artifacts)
    recs = pq.read_table(bundle / layout.RECOMMENDATIONS, columns=["user_id"])
    items = pq.read_table(bundle / layout.ITEMS, columns=["item_id"])
    return {
        "user": str(recs.column("user_id")[0].as_py()),
        "item": str(items.column("item_id")[0].as_py()),
        "item2": str(items.column("item_id")[1].as_py()),
    }


def _recommend(base: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}/v1/recommendations", json=body, timeout=10)


def test_every_endpoint_answers(server: str, ids: dict[str, str]) -> None:
    assert requests.get(f"{server}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{server}/v1/ping", timeout=5).json() == {"pong": True}
    assert requests.get(f"{server}/openapi.json", timeout=5).json()["openapi"].startswith("3.")
    assert "<form" in requests.get(f"{server}/", timeout=5).text

    data = _recommend(server, {"user_id": ids["user"], "k": 10}).json()
    assert data["served_by"] == "rerank" and len(data["items"]) == 10
    data = _recommend(server, {"user_id": "nobody-at-all", "k": 5}).json()
    assert data["served_by"] in ("popular", "popular_segment")
    assert data["fallback_reason"] == "unknown_user"

    resp = requests.post(
        f"{server}/v1/rerank",
        json={"user_id": ids["user"], "candidate_item_ids": [ids["item"], ids["item2"], "??"]},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.json()["unknown_item_ids"] == ["??"]
    resp = requests.get(f"{server}/v1/items/{ids['item']}/similar?k=5", timeout=10)
    assert resp.status_code == 200
    assert ids["item"] not in {i["item_id"] for i in resp.json()["items"]}

    for _ in range(10):  # spread over both workers, then read the aggregated metrics
        _recommend(server, {"user_id": ids["user"], "k": 10})
    metrics = requests.get(f"{server}/metrics", timeout=5).text
    assert "recsys_stage_seconds_bucket" in metrics
    assert 'recsys_served_total{endpoint="recommendations",served_by="rerank"}' in metrics
    assert "recsys_cache_hit_ratio" in metrics
    assert metrics.count("recsys_bundle_info{") >= 1  # one line per live worker


def test_bad_requests_are_json_4xx(server: str) -> None:
    resp = requests.post(
        f"{server}/v1/recommendations",
        data="{oops",
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]
    resp = _recommend(server, {"user_id": "u", "k": 1000})
    assert resp.status_code == 422 and resp.json()["field"] == "k"
    resp = _recommend(server, {"user_id": "u", "context": {"recent_item_ids": [1]}})
    assert resp.status_code == 422 and resp.json()["field"] == "context.recent_item_ids.0"
    resp = requests.get(f"{server}/no/such/route", timeout=5)
    assert resp.status_code == 404 and resp.json() == {"error": "not found", "field": None}
    resp = _recommend(server, {"user_id": "x" * 400_000})
    assert resp.status_code == 413 and resp.json()["error"] == "request body too large"
    assert requests.post(f"{server}/admin/reload", timeout=5).status_code == 401


def _hammer(
    base: str, user: str, stop: threading.Event, seen: Counter[str], failures: list[str]
) -> None:
    session = requests.Session()
    while not stop.is_set():
        try:
            resp = session.post(
                f"{base}/v1/recommendations", json={"user_id": user, "k": 10}, timeout=10
            )
            if resp.status_code != 200:
                failures.append(f"{resp.status_code} {resp.text[:200]}")
            else:
                seen[resp.json()["bundle"]] += 1
        except requests.RequestException as exc:
            failures.append(repr(exc))


@contextlib.contextmanager
def hammering(
    base: str, user: str, clients: int = 4
) -> Iterator[tuple[Counter[str], list[str]]]:
    """`clients` threads posting recommendations for `user` until the block ends; yields
    (answers per bundle, failures), complete once the block has ended."""
    stop, seen, failures = threading.Event(), Counter[str](), []
    threads = [threading.Thread(target=_hammer, args=(base, user, stop, seen, failures))
               for _ in range(clients)]  # fmt: skip
    for t in threads:
        t.start()
    try:
        yield seen, failures
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def _wait_all_workers_on(base: str, user: str, run_id: str, timeout: float = 20) -> None:
    """Every worker answers from run_id: 20 answers in a row say so."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 20:
        assert time.monotonic() < deadline, f"workers did not all switch to {run_id}"
        bundle = _recommend(base, {"user_id": user, "k": 5}).json()["bundle"]
        streak = streak + 1 if bundle == run_id else 0


def test_reload_under_load_fails_no_request(
    server: str, service_artifacts: Path, ids: dict[str, str]
) -> None:
    old = current_bundle(service_artifacts).name
    with hammering(server, ids["user"]) as (seen, failures):
        time.sleep(1.0)
        publish_clone(service_artifacts, "run-reloaded")
        resp = requests.post(f"{server}/admin/reload", headers={"X-Admin-Token": TOKEN}, timeout=60)
        assert resp.status_code == 200 and resp.json()["serving"] == "run-reloaded"
        _wait_all_workers_on(server, ids["user"], "run-reloaded")
        time.sleep(0.5)
    assert failures == []
    assert seen[old] > 0 and seen["run-reloaded"] > 0


def test_corrupt_bundle_is_refused_while_the_old_serves(
    server: str, service_artifacts: Path, ids: dict[str, str]
) -> None:
    serving = current_bundle(service_artifacts).name
    corrupt(publish_clone(service_artifacts, "run-corrupt"))
    resp = requests.post(f"{server}/admin/reload", headers={"X-Admin-Token": TOKEN}, timeout=60)
    assert resp.status_code == 409
    assert resp.json()["status"] == "refused" and resp.json()["serving"] == serving
    time.sleep(2.5)  # let both workers' pollers see (and refuse) the new CURRENT too
    for _ in range(20):
        resp = _recommend(server, {"user_id": ids["user"], "k": 5})
        assert resp.status_code == 200 and resp.json()["bundle"] == serving
    assert requests.get(f"{server}/readyz", timeout=5).json()["bundle"] == serving
    metrics = requests.get(f"{server}/metrics", timeout=5).text
    assert 'recsys_bundle_reloads_total{result="refused"}' in metrics
    write_current(service_artifacts, serving)  # leave the artifacts as we found them


def test_served_requests_reach_the_request_log(
    server: str, service_artifacts: Path, ids: dict[str, str]
) -> None:
    """Each answer is logged with its request id; files appear once the buffer rotates."""
    sent = {}
    for n, user in enumerate([ids["user"], "nobody-known"]):
        request_id = f"e2e-log-{n}"
        resp = requests.post(
            f"{server}/v1/recommendations",
            json={"user_id": user, "k": 3},
            headers={"X-Request-Id": request_id},
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json()["request_id"] == request_id
        sent[request_id] = resp.json()
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 15  # the server rotates files every 2 s (fixture flag)
    while time.monotonic() < deadline and set(found) != set(sent):
        for path in part_files(log_dir(service_artifacts)):
            for row in pq.read_table(path).to_pylist():
                if row["request_id"] in sent:
                    found[row["request_id"]] = row
        time.sleep(0.5)
    assert set(found) == set(sent)
    for request_id, answer in sent.items():
        row = found[request_id]
        assert row["served_by"] == answer["served_by"]
        assert row["bundle"] == answer["bundle"]
        assert [i["item_id"] for i in row["items"]] == [i["item_id"] for i in answer["items"]]
        assert [i["rank"] for i in row["items"]] == list(range(1, len(answer["items"]) + 1))
    assert found["e2e-log-1"]["fallback_reason"]  # an unknown user is a logged fallback


def test_over_budget_rerank_falls_back_to_the_precomputed_list(
    service_artifacts: Path, ids: dict[str, str], tmp_path: Path
) -> None:
    """A budget no stage fits in (config, not a mock): the nightly list answers."""
    with running_server(service_artifacts, tmp_path / "log", RECSYS_BUDGET_MS="0") as base:
        data = _recommend(base, {"user_id": ids["user"], "k": 10}).json()
    assert data["served_by"] == "precomputed" and len(data["items"]) == 10
    assert "budget_exceeded" in data["fallback_reason"]


def test_missing_model_file_serves_without_the_ranker(
    service_artifacts: Path, ids: dict[str, str], tmp_path: Path
) -> None:
    """A bundle whose model file is gone: with checksums on it is refused (nothing ready);
    with them off (an operator's override) it serves, scored by the ALS dot product."""
    source = current_bundle(service_artifacts)
    artifacts = tmp_path / "art"
    target = run_dir(artifacts, source.name)
    shutil.copytree(source, target)
    write_current(artifacts, source.name)
    models = [path for m in layout.RANKER_MODELS if (path := target / layout.ranker_file(m)).exists()]
    assert models, "the e2e bundle should carry an ONNX ranker"
    for model in models:
        model.unlink()
    with running_server(artifacts, tmp_path / "log", RECSYS_VERIFY_CHECKSUMS="false") as base:
        data = _recommend(base, {"user_id": ids["user"], "k": 10}).json()
        ready = requests.get(f"{base}/readyz", timeout=5).json()
        metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert data["served_by"] == "rerank" and len(data["items"]) == 10
    assert data["scorer"] == "als-dot" and ready["scorer"] == "als-dot"
    assert 'kind="ranker_unusable"' in metrics
