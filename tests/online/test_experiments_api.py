"""Experiment arms on the request path: a real app over real small bundles and a real
experiments file (shared.experiments.write, as `recsys experiment set` does)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from flask import Flask
from flask.testing import FlaskClient

from online.realtime.sqlite_store import SqliteStore
from online.schemas import RecommendationResponse, RerankResponse
from shared import experiments as exp
from shared.events import FeedbackEvent
from shared.parquet_log import part_files
from shared.request_log import log_dir
from tests.online.bundle_factory import build_bundle, corrupt
from tests.online.conftest import ADMIN_TOKEN, make_app, recommend

USERS = [f"u{n}" for n in range(39)]  # every user with a precomputed list


def arms(*specs: tuple[str, float, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": n, "share": s, "treatment": t} for n, s, t in specs]


def declare(artifacts: Path, *experiments: dict[str, Any]) -> exp.ExperimentsFile:
    return exp.write(artifacts, exp.ExperimentsFile.model_validate({"experiments": experiments}))


def experiment(name: str, arm_specs: list[dict[str, Any]], layer: str | None = None
               ) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "layer": layer or name, "salt": f"{name}-1", "status": "running",
            "arms": arm_specs}  # fmt: skip


def started(artifacts: Path, **overrides: Any) -> Flask:
    # A budget no loaded test host overruns: these tests compare arms, not fallbacks.
    app = make_app(artifacts, **{"budget_ms": 10_000, **overrides})
    app.extensions["recsys"].store.ensure_started()
    return app


@pytest.fixture
def served(artifacts: Path) -> Iterator[Flask]:
    """An app started on a file: experiment `scoring` splits users control / noscore."""
    declare(artifacts, experiment("scoring", arms(("control", 0.5, {}),
                                                  ("noscore", 0.5, {"scorer": "none"}))))
    app = started(artifacts)
    yield app
    app.extensions["recsys"].store.stop()


def user_in(artifacts: Path, experiment_name: str, arm: str) -> str:
    file = exp.load(artifacts)
    return next(u for u in USERS
                for a in exp.assign(file, u) if (a.experiment, a.arm) == (experiment_name, arm))


def ids(data: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in data["items"]]


def test_without_a_file_no_experiment_is_reported(client: FlaskClient) -> None:
    data = recommend(client, user_id="u1", k=5)
    assert (data["experiment"], data["arm"], data["experiments"]) == (None, None, [])


def test_the_no_scorer_arm_serves_the_precomputed_list(served: Flask, artifacts: Path) -> None:
    client = served.test_client()
    control = recommend(client, user_id=user_in(artifacts, "scoring", "control"), k=10)
    assert (control["experiment"], control["arm"]) == ("scoring", "control")
    assert control["experiments"] == [{"experiment": "scoring", "arm": "control"}]
    assert (control["served_by"], control["scorer"]) == ("rerank", "als-dot")
    user = user_in(artifacts, "scoring", "noscore")
    treated = recommend(client, user_id=user, k=10)
    assert (treated["arm"], treated["served_by"], treated["scorer"]) == (
        "noscore", "precomputed", None)
    assert treated["fallback_reason"] is None  # a treatment, not a fallback
    RecommendationResponse.model_validate(treated)
    # The same user forced into control is re-ranked again: the arm, not the user, did it.
    # (bundle_factory's precomputed lists are in ALS order, so the rows themselves agree.)
    forced = client.post("/v1/recommendations", json={"user_id": user, "k": 10},
                         headers={"X-Recsys-Arm": "scoring=control",
                                  "X-Admin-Token": ADMIN_TOKEN})  # fmt: skip
    assert forced.status_code == 200
    assert (forced.json["arm"], forced.json["served_by"], forced.json["scorer"]) == (
        "control", "rerank", "als-dot")


def test_assignment_id_places_an_anonymous_caller(served: Flask, artifacts: Path) -> None:
    file = exp.load(artifacts)
    anon = next(f"device-{n}" for n in range(100)
                if exp.assign(file, f"device-{n}")[0].arm == "noscore")
    data = recommend(served.test_client(), user_id="u0", assignment_id=anon, k=5)
    assert data["arm"] == "noscore"
    again = recommend(served.test_client(), user_id="someone-else", assignment_id=anon, k=5)
    assert again["arm"] == "noscore"  # the id, not the user, picks the arm


def test_rerank_applies_the_arm(served: Flask, artifacts: Path) -> None:
    user = user_in(artifacts, "scoring", "noscore")
    resp = served.test_client().post("/v1/rerank", json={
        "user_id": user, "candidate_item_ids": ["m3", "m1", "m2"]})  # fmt: skip
    data = resp.get_json()
    assert resp.status_code == 200 and data["arm"] == "noscore"
    assert (data["served_by"], data["scorer"], data["fallback_reason"]) == (
        "caller_order", None, None)
    RerankResponse.model_validate(data)


def test_the_forced_arm_needs_the_admin_token(served: Flask, artifacts: Path) -> None:
    client = served.test_client()
    body = {"user_id": user_in(artifacts, "scoring", "control"), "k": 5}
    for headers in ({"X-Recsys-Arm": "scoring=noscore"},
                    {"X-Recsys-Arm": "scoring=noscore", "X-Admin-Token": "wrong"}):
        resp = client.post("/v1/recommendations", json=body, headers=headers)
        assert resp.status_code == 403
        assert resp.get_json()["field"] == "X-Recsys-Arm"
        assert "X-Admin-Token" in resp.get_json()["error"]
    token = {"X-Admin-Token": ADMIN_TOKEN}
    resp = client.post("/v1/recommendations", json=body,
                       headers=token | {"X-Recsys-Arm": "scoring=noscore"})
    assert resp.status_code == 200 and resp.get_json()["arm"] == "noscore"
    for bad, words in (("scoring", "experiment=arm"), ("scoring=nope", "has no arm 'nope'"),
                       ("other=x", "no running experiment 'other'"),
                       ("scoring=a, scoring=b", "twice")):  # fmt: skip
        resp = client.post("/v1/recommendations", json=body, headers=token | {"X-Recsys-Arm": bad})
        assert resp.status_code == 422, bad
        assert resp.get_json()["field"] == "X-Recsys-Arm" and words in resp.get_json()["error"]


def test_diversity_off_lifts_the_genre_cap(artifacts: Path) -> None:
    declare(artifacts, experiment("rules", arms(("capped", 0.5, {}),
                                                ("uncapped", 0.5, {"diversity": False}))))
    client = started(artifacts).test_client()
    force = {"X-Admin-Token": ADMIN_TOKEN}

    def dramas(arm: str, user: str) -> int:  # bundle_factory: m<i> is Comedy first iff i % 4 == 0
        data = client.post("/v1/recommendations", json={"user_id": user, "k": 10},
                           headers=force | {"X-Recsys-Arm": f"rules={arm}"}).get_json()
        return sum(int(i[1:]) % 4 != 0 for i in ids(data))

    capped = [dramas("capped", u) for u in USERS[:10]]
    uncapped = [dramas("uncapped", u) for u in USERS[:10]]
    assert max(capped) <= 5  # ceil(10 / 2)
    assert max(uncapped) > 5


def test_realtime_recents_off_ignores_the_users_events(artifacts: Path, tmp_path: Path) -> None:
    declare(artifacts, experiment("rt", arms(("on", 0.5, {}),
                                             ("off", 0.5, {"realtime_recents": False}))))
    app = started(artifacts)
    store = SqliteStore(tmp_path / "rt" / "realtime.sqlite3")
    app.extensions["recsys"].realtime = store
    client = app.test_client()

    def answer(arm: str) -> list[str]:
        return ids(client.post("/v1/recommendations", json={"user_id": "u2", "k": 10},
                               headers={"X-Admin-Token": ADMIN_TOKEN,
                                        "X-Recsys-Arm": f"rt={arm}"}).get_json())  # fmt: skip

    before = answer("on")
    ts = dt.datetime.now(dt.UTC)
    store.record([FeedbackEvent(uuid.uuid4().hex, "play", "u2", before[0], ts, ts)])
    assert before[0] not in answer("on")
    assert answer("off") == before


def test_ann_k_changes_the_candidates(artifacts: Path) -> None:
    declare(artifacts, experiment("ann", arms(("wide", 0.5, {}),
                                              ("narrow", 0.5, {"ann_k": 1}))))
    client = started(artifacts, scored_cache_size=1000).test_client()
    token = {"X-Admin-Token": ADMIN_TOKEN}
    changed = 0
    for user in USERS[:10]:
        wide, narrow = (
            ids(client.post("/v1/recommendations", json={"user_id": user, "k": 20},
                            headers=token | {"X-Recsys-Arm": f"ann={arm}"}).get_json())
            for arm in ("wide", "narrow")
        )  # fmt: skip
        changed += wide != narrow
    assert changed > 0  # and the scored cache did not hand one arm the other's answer


def test_a_bundle_arm_serves_another_run(artifacts: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:  # fmt: skip
    build_bundle(artifacts, "run-b", seed=7, publish=False)
    declare(artifacts, experiment("bundle", arms(("current", 0.5, {}),
                                                 ("canary", 0.5, {"bundle": "run-b"}))))
    app = started(artifacts)
    client = app.test_client()
    canary = recommend(client, user_id=user_in(artifacts, "bundle", "canary"), k=5)
    current = recommend(client, user_id=user_in(artifacts, "bundle", "current"), k=5)
    assert (canary["bundle"], canary["arm"]) == ("run-b", "canary")
    assert (current["bundle"], current["arm"]) == ("run-a", "current")
    # Both bundles are held at once; CURRENT is still run-a.
    assert app.extensions["recsys"].store.current.run_id == "run-a"
    assert set(app.extensions["recsys"].experiments.snapshot.bundles) == {"run-b"}

    # An arm bundle that fails verification refuses the whole new file; the old one serves.
    build_bundle(artifacts, "run-c", seed=8, publish=False)
    corrupt(artifacts / "runs" / "run-c")
    declare(artifacts, experiment("bundle", arms(("current", 0.5, {}),
                                                 ("canary", 0.5, {"bundle": "run-c"}))))
    with caplog.at_level(logging.ERROR, logger="online.experiments"):
        app.extensions["recsys"].store.reload()
    assert any("experiments file refused" in r.getMessage() for r in caplog.records)
    assert "run-c" in (app.extensions["recsys"].experiments.last_error or "")
    again = recommend(client, user_id=user_in(artifacts, "bundle", "canary"), k=5)
    assert again["bundle"] == "run-b"


def test_a_bad_file_is_refused_and_the_last_good_keeps_serving(
    served: Flask, artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = served.test_client()
    user = user_in(artifacts, "scoring", "noscore")
    assert recommend(client, user_id=user)["arm"] == "noscore"
    path = exp.experiments_path(artifacts)
    good = path.read_text()
    bad = json.loads(good)
    bad["experiments"][0]["arms"][0]["share"] = 0.9  # shares now sum to 1.4
    path.write_text(json.dumps(bad))
    with caplog.at_level(logging.ERROR, logger="online.experiments"):
        served.extensions["recsys"].store.reload()  # the poll's path: reload, then experiments
        served.extensions["recsys"].store.reload()  # the same bad content: not logged again
    refusals = [r for r in caplog.records if "experiments file refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "shares must sum to 1" in refusals[0].__dict__["error"]
    assert recommend(client, user_id=user)["arm"] == "noscore"

    # A fixed file is taken at the next poll.
    declare(artifacts, experiment("scoring", arms(("control", 1.0, {}))))
    served.extensions["recsys"].store.reload()
    assert recommend(client, user_id=user)["arm"] == "control"
    # Removing the file stops every experiment.
    path.unlink()
    served.extensions["recsys"].store.reload()
    assert recommend(client, user_id=user)["experiments"] == []


def test_a_bad_file_at_start_serves_without_experiments(artifacts: Path) -> None:
    exp.experiments_path(artifacts).write_text('{"experiments": [{"name": "x"}]}')
    data = recommend(started(artifacts).test_client(), user_id="u1")
    assert data["experiments"] == [] and data["served_by"] == "rerank"


def test_the_served_log_records_the_arms(served: Flask, artifacts: Path) -> None:
    client = served.test_client()
    user = user_in(artifacts, "scoring", "noscore")
    client.post("/v1/recommendations", json={"user_id": user}, headers={"X-Request-Id": "r-1"})
    client.post("/v1/recommendations", json={"user_id": "u1"}, headers={"X-Request-Id": "r-2"})
    service = served.extensions["recsys"]
    service.request_log.close()
    rows = {r["request_id"]: r for f in part_files(log_dir(artifacts))
            for r in pq.read_table(f).to_pylist()}  # fmt: skip
    assert rows["r-1"]["assignments"] == [{"experiment": "scoring", "arm": "noscore"}]
    arm = exp.assign(exp.load(artifacts), "u1")[0].arm
    assert rows["r-2"]["assignments"] == [{"experiment": "scoring", "arm": arm}]


def test_the_openapi_document_declares_the_arms(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    response = spec["components"]["schemas"]["RecommendationResponse"]["properties"]
    assert {"experiment", "arm", "experiments"} <= set(response)
    post = spec["paths"]["/v1/recommendations"]["post"]
    assert "X-Recsys-Arm" in {p["name"] for p in post["parameters"]}
    assert "403" in post["responses"]
    request = spec["components"]["schemas"]["RecommendationRequest"]["properties"]
    assert "assignment_id" in request


def test_a_scorer_arm_on_a_bundle_with_a_ranker(tmp_path: Path) -> None:
    build_bundle(tmp_path, "run-r", with_ranker=True)
    declare(tmp_path, experiment("scorer", arms(("model", 0.4, {}),
                                                ("dot", 0.3, {"scorer": "als-dot"}),
                                                ("fp32", 0.3, {"scorer": "onnx-fp32"}))))
    client = started(tmp_path).test_client()
    token = {"X-Admin-Token": ADMIN_TOKEN}

    def answer(arm: str) -> dict[str, Any]:
        resp = client.post("/v1/recommendations", json={"user_id": "u3", "k": 10},
                           headers=token | {"X-Recsys-Arm": f"scorer={arm}"})
        assert resp.status_code == 200
        data: dict[str, Any] = resp.get_json()
        return data

    model, dot = answer("model"), answer("dot")
    assert (model["scorer"], dot["scorer"]) == ("onnx-int8", "als-dot")
    # The test ranker scores 2 x als_dot: same order, scores twice the dot product's.
    assert ids(model) == ids(dot)
    assert model["items"][0]["score"] == pytest.approx(2 * dot["items"][0]["score"], rel=0.05)
    # The bundle ships no fp32 model: served with its own scorer, and the answer says so.
    assert answer("fp32")["scorer"] == "onnx-int8"
