"""Hot reload: a new bundle swaps in; a bad one is refused and the old one keeps serving;
a worker that starts after a bad publish serves its server's last accepted bundle."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from online.bundle_store import BundleStore, default_server_id
from online.config import ServiceConfig, describe_error
from shared import bundle_layout as layout
from shared.bundle import (
    ACCEPTED_DIR,
    accepted_runs,
    checksum_tree,
    load_manifest,
    read_accepted,
    run_dir,
    write_current,
)
from tests.online.bundle_factory import build_bundle, corrupt, half_copy, rewrite_array
from tests.online.conftest import ADMIN_TOKEN, make_app, recommend

HEADERS = {"X-Admin-Token": ADMIN_TOKEN}


def test_reload_requires_the_token(client: FlaskClient) -> None:
    resp = client.post("/admin/reload")
    assert resp.status_code == 401 and resp.get_json()["field"] == "X-Admin-Token"
    resp = client.post("/admin/reload", headers={"X-Admin-Token": "wrong"})
    assert resp.status_code == 403


def test_reload_is_closed_without_a_configured_token(artifacts: Path) -> None:
    client = make_app(artifacts, admin_token=None).test_client()
    assert client.post("/admin/reload", headers={"X-Admin-Token": ""}).status_code == 403


def test_admin_reload_swaps_to_the_new_bundle(client: FlaskClient, artifacts: Path) -> None:
    assert client.post("/admin/reload", headers=HEADERS).get_json()["status"] == "unchanged"
    build_bundle(artifacts, "run-b", seed=1)
    resp = client.post("/admin/reload", headers=HEADERS)
    assert resp.status_code == 200
    assert resp.get_json() == {
        "status": "loaded",
        "run_id": "run-b",
        "serving": "run-b",
        "error": None,
    }
    assert recommend(client, user_id="u1")["bundle"] == "run-b"
    metrics = client.get("/metrics").data
    assert b'recsys_bundle_info{run_id="run-b",scorer="als-dot"} 1.0' in metrics
    assert b'run_id="run-a"' not in metrics


def _refused(client: FlaskClient) -> None:
    resp = client.post("/admin/reload", headers=HEADERS)
    assert resp.status_code == 409
    body = resp.get_json()
    assert body["status"] == "refused" and body["serving"] == "run-a" and body["error"]
    assert recommend(client, user_id="u1")["bundle"] == "run-a"
    assert client.get("/readyz").status_code == 200


def test_corrupt_bundle_is_refused_old_keeps_serving(client: FlaskClient, artifacts: Path) -> None:
    corrupt(build_bundle(artifacts, "run-b", seed=1))
    _refused(client)
    assert b'recsys_bundle_reloads_total{result="refused"}' in client.get("/metrics").data


def test_missing_file_is_refused(client: FlaskClient, artifacts: Path) -> None:
    (build_bundle(artifacts, "run-b") / layout.INDEX).unlink()
    _refused(client)


def test_missing_run_directory_is_refused(client: FlaskClient, artifacts: Path) -> None:
    write_current(artifacts, "run-404")
    _refused(client)


def test_inconsistent_shapes_are_refused(client: FlaskClient, artifacts: Path) -> None:
    # A bundle with another factor dimension but the old index: checksums pass, shapes do not.
    run_b = build_bundle(artifacts, "run-b", dim=8, publish=False)
    shutil.copy(artifacts / "runs" / "run-a" / layout.INDEX, run_b / layout.INDEX)
    manifest = load_manifest(run_b).model_copy(update={"files": checksum_tree(run_b)})
    (run_b / layout.MANIFEST).write_text(manifest.model_dump_json())
    write_current(artifacts, "run-b")
    _refused(client)


def test_refused_bundle_can_be_fixed_and_retried(client: FlaskClient, artifacts: Path) -> None:
    run_b = build_bundle(artifacts, "run-b", seed=1)
    saved = (run_b / layout.ITEM_FACTORS).read_bytes()
    corrupt(run_b)
    _refused(client)
    (run_b / layout.ITEM_FACTORS).write_bytes(saved)
    assert client.post("/admin/reload", headers=HEADERS).get_json()["status"] == "loaded"


def test_poller_picks_up_a_new_current(artifacts: Path) -> None:
    app: Flask = make_app(artifacts, reload_poll_seconds=0.1)
    store = app.extensions["recsys"].store
    store.ensure_started()
    try:
        build_bundle(artifacts, "run-b", seed=2)
        deadline = time.monotonic() + 10
        while store.current.run_id != "run-b" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.current.run_id == "run-b"
    finally:
        store.stop()


def test_in_flight_request_keeps_its_bundle(app: Flask, artifacts: Path) -> None:
    store = app.extensions["recsys"].store
    old = store.current
    build_bundle(artifacts, "run-b", seed=1)
    store.reload()
    assert store.current is not old and store.current.run_id == "run-b"
    # A request that read `old` before the swap still has every array it needs.
    recommender = app.extensions["recsys"].recommender
    from online.recommend import Query

    answer = recommender.recommend(old, Query(user_id="u1", k=5))
    assert answer.served_by == "rerank" and len(answer.items) == 5


def test_announce_reaches_a_sibling_worker(artifacts: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    first = make_app(artifacts, runtime_dir=runtime)
    second = make_app(artifacts, runtime_dir=runtime)
    stores = [a.extensions["recsys"].store for a in (first, second)]
    for store in stores:
        store.ensure_started()
    try:
        build_bundle(artifacts, "run-b", seed=3)
        resp = first.test_client().post("/admin/reload", headers=HEADERS)
        assert resp.get_json()["serving"] == "run-b"
        deadline = time.monotonic() + 10
        while stores[1].current.run_id != "run-b" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stores[1].current.run_id == "run-b"
    finally:
        for store in stores:
            store.stop()


# --- the last accepted bundle: a restarted worker never serves 503 after a bad publish ----


def _restart(artifacts: Path, **overrides: Any) -> Flask:
    """A worker starting (gunicorn's post_worker_init) beside the running ones."""
    app = make_app(artifacts, **overrides)
    app.extensions["recsys"].store.ensure_started()
    return app


def _store(app: Flask) -> BundleStore:
    store: BundleStore = app.extensions["recsys"].store
    return store


def _refused_count(client: FlaskClient) -> float:
    found = re.search(
        rb'recsys_bundle_reloads_total\{result="refused"\} ([0-9.e+]+)', client.get("/metrics").data
    )
    return float(found.group(1)) if found else 0.0


def _ready_on(client: FlaskClient, serving: str, refused_run: str | None) -> dict[str, Any]:
    resp = client.get("/readyz")
    body: dict[str, Any] = resp.get_json()
    assert resp.status_code == 200, body
    assert body["bundle"] == serving and body["refused"]["run_id"] == refused_run, body
    assert recommend(client, user_id="u1")["bundle"] == serving
    return body


def test_an_accepted_bundle_is_recorded_per_server(app: Flask, artifacts: Path) -> None:
    store = _store(app)
    assert store.server_id == default_server_id(8000)  # the default: <hostname>-<port>
    assert read_accepted(artifacts, store.server_id) == "run-a"
    build_bundle(artifacts, "run-b", seed=1)
    other = _restart(artifacts, server_id="edge-2")  # a second server on the same ART
    assert _store(other).current.run_id == "run-b"
    # Each server has its own record: the second server's load left the first's alone.
    assert accepted_runs(artifacts) == {store.server_id: "run-a", "edge-2": "run-b"}
    store.reload()
    assert read_accepted(artifacts, store.server_id) == "run-b"
    assert sorted(p.name for p in (artifacts / ACCEPTED_DIR).iterdir()) == sorted(
        ["edge-2", store.server_id]
    )  # no temporary file left behind


def test_restarted_worker_starts_on_the_last_accepted_bundle(
    client: FlaskClient, artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The defect: after a refused publish, a restarted worker had no bundle and answered
    503 "no bundle loaded yet" while its sibling served the old one."""
    corrupt(build_bundle(artifacts, "run-b", seed=1))
    _refused(client)  # the running worker refuses run-b and keeps run-a
    before = _refused_count(client)
    with caplog.at_level(logging.ERROR, logger="online.bundle_store"):
        restarted = _restart(artifacts).test_client()
    body = _ready_on(restarted, "run-a", "run-b")
    assert "checksum mismatch" in body["refused"]["error"]
    # The refusal keeps being said: counted and logged by the restarted worker too.
    assert _refused_count(restarted) == before + 1
    assert any(r.getMessage() == "bundle refused" and getattr(r, "run_id", None) == "run-b"
               for r in caplog.records)  # fmt: skip
    # The running worker's /readyz says it as well.
    _ready_on(client, "run-a", "run-b")


def test_a_contents_invalid_bundle_is_refused_on_restart_too(app: Flask, artifacts: Path) -> None:
    run_b = build_bundle(artifacts, "run-b", seed=1)

    def all_nan(a: np.ndarray) -> None:
        a[:] = np.nan

    rewrite_array(run_b, layout.USER_FACTORS, all_nan)
    body = _ready_on(_restart(artifacts).test_client(), "run-a", "run-b")
    assert f"{layout.USER_FACTORS}: 40 of 40 rows not finite" in body["refused"]["error"]


def test_restarted_worker_on_a_missing_run_directory(app: Flask, artifacts: Path) -> None:
    write_current(artifacts, "run-404")
    body = _ready_on(_restart(artifacts).test_client(), "run-a", "run-404")
    assert "run directory" in body["refused"]["error"] and "does not exist" in body["refused"]["error"]


@pytest.mark.parametrize(
    ("drop", "truncate", "verify", "reason"),
    [
        (layout.CANDIDATE_SCORES, None, True, "missing files ['candidate_scores.npy']"),
        (None, layout.USER_FACTORS, True, "checksum mismatch for user_factors.npy"),
        # Without checksums (an operator's override) a cut array cannot be mapped either.
        (None, layout.USER_FACTORS, False, "unreadable array"),
        (None, layout.ITEMS, False, "items.parquet: unreadable"),
    ],
)
def test_restarted_worker_on_a_half_copied_run(
    app: Flask, artifacts: Path, tmp_path: Path,
    drop: str | None, truncate: str | None, verify: bool, reason: str,
) -> None:  # fmt: skip
    staged = build_bundle(tmp_path / "staging", "run-b", seed=1, publish=False)
    half_copy(staged, run_dir(artifacts, "run-b"), drop=drop, truncate=truncate)
    write_current(artifacts, "run-b")
    body = _ready_on(_restart(artifacts, verify_checksums=verify).test_client(), "run-a", "run-b")
    assert reason in body["refused"]["error"]


def test_first_start_without_an_accepted_record_answers_503_with_the_reason(
    tmp_path: Path,
) -> None:
    corrupt(build_bundle(tmp_path, "run-a"))
    client = _restart(tmp_path).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert "checksum mismatch" in body["error"] and body["refused"]["run_id"] == "run-a"
    resp = client.post("/v1/recommendations", json={"user_id": "u1"})
    assert resp.status_code == 503 and resp.get_json()["error"] == "no bundle loaded yet"
    assert accepted_runs(tmp_path) == {}


def test_a_broken_accepted_run_answers_503_with_both_reasons(app: Flask, artifacts: Path) -> None:
    corrupt(run_dir(artifacts, "run-a"))  # the accepted run itself damaged on disk
    write_current(artifacts, "run-404")
    resp = _restart(artifacts).test_client().get("/readyz")
    assert resp.status_code == 503
    error = resp.get_json()["error"]
    assert "run-404" in error and "last accepted bundle run-a refused too" in error
    assert "checksum mismatch" in error


def test_a_worker_records_nothing_it_did_not_accept(app: Flask, artifacts: Path) -> None:
    corrupt(build_bundle(artifacts, "run-b", seed=1))
    restarted = _restart(artifacts)
    assert _store(restarted).current.run_id == "run-a"
    assert read_accepted(artifacts, _store(restarted).server_id) == "run-a"


def test_the_refusal_clears_once_current_is_served(client: FlaskClient, artifacts: Path) -> None:
    corrupt(build_bundle(artifacts, "run-b", seed=1))
    restarted = _restart(artifacts)
    _ready_on(restarted.test_client(), "run-a", "run-b")
    write_current(artifacts, "run-a")  # the operator rolls CURRENT back
    assert _store(restarted).reload().status == "unchanged"
    assert restarted.test_client().get("/readyz").get_json()["refused"] is None
    build_bundle(artifacts, "run-c", seed=2)  # then the next night publishes a good one
    assert _store(restarted).reload().status == "loaded"
    body = restarted.test_client().get("/readyz").get_json()
    assert body["bundle"] == "run-c" and body["refused"] is None
    assert read_accepted(artifacts, _store(restarted).server_id) == "run-c"


def test_the_default_server_id_is_the_host_and_port_as_a_file_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "web-1.eu")
    assert default_server_id(8000) == "web-1.eu-8000"
    monkeypatch.setattr(socket, "gethostname", lambda: "../odd host")
    assert default_server_id(9000) == "odd_host-9000"


def test_the_server_id_setting(tmp_path: Path) -> None:
    config = ServiceConfig.from_env({"RECSYS_ARTIFACTS": str(tmp_path), "RECSYS_SERVER_ID": "eu-1"})
    assert BundleStore(config).server_id == "eu-1"
    assert BundleStore(ServiceConfig(artifacts=tmp_path, port=9123)).server_id.endswith("-9123")
    for bad in ("../etc", ".hidden", "a/b", ""):  # the record is a file name in ART/accepted
        with pytest.raises(ValidationError) as info:
            ServiceConfig(artifacts=tmp_path, server_id=bad)
        assert "RECSYS_SERVER_ID" in describe_error(info.value)
