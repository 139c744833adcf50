"""Hot reload: a new bundle swaps in; a bad one is refused and the old one keeps serving."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from shared import bundle_layout as layout
from shared.bundle import checksum_tree, load_manifest, write_current
from tests.online.bundle_factory import build_bundle, corrupt
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
