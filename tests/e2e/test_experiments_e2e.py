"""Experiments on the real server (`recsys serve`, 2 gunicorn workers): a user keeps their arm
whichever worker answers and across a restart, and a new experiments file set with the CLI
reaches every worker at its poll."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from shared import experiments as exp
from shared import rollout
from shared.bundle import read_current
from shared.request_log import log_dir, part_files
from tests.conftest import use_development_key
from tests.e2e.test_service_e2e import TOKEN, running_server
from tests.online.bundle_factory import build_bundle

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
USERS = [f"u{n}" for n in range(40)]
# The server's workers import this checkout, whatever the venv's editable install points at.
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def recsys_experiment(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "shared.cli", "experiment", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def declare(art: Path, tmp: Path, status: str = "running") -> None:
    spec = tmp / f"experiments-{status}.json"
    spec.write_text(json.dumps({"version": 0, "experiments": [{
        "name": "scoring", "layer": "ranking", "salt": "scoring-e2e", "status": status,
        "arms": [{"name": "control", "share": 0.5},
                 {"name": "noscore", "share": 0.5, "treatment": {"scorer": "none"}}],
    }]}))  # fmt: skip
    recsys_experiment("set", str(spec), "--artifacts", str(art))


def arms_served(base: str, rounds: int) -> dict[str, set[tuple[str | None, str]]]:
    """user -> every (arm, served_by) answered; a fresh connection per request, so both
    workers answer."""
    seen: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
    for n in range(rounds):
        for user in USERS:
            resp = requests.post(f"{base}/v1/recommendations", timeout=10,
                                 json={"user_id": user, "k": 5},
                                 headers={"X-Request-Id": f"{user}-{n}-{time.time_ns()}"})
            assert resp.status_code == 200, resp.text
            seen[user].add((resp.json()["arm"], resp.json()["served_by"]))
    return seen


def test_sticky_across_workers_and_restarts(tmp_path: Path) -> None:
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=41)
    declare(art, tmp_path)
    expected = {u: exp.assign(exp.load(art), u)[0].arm for u in USERS}
    assert set(expected.values()) == {"control", "noscore"}

    with running_server(art, tmp_path / "first.log", **ENV) as base:
        first = arms_served(base, rounds=3)
    with running_server(art, tmp_path / "second.log", **ENV) as base:
        second = arms_served(base, rounds=2)
        for user in USERS:
            arm = expected[user]
            served_by = "precomputed" if arm == "noscore" else "rerank"
            assert first[user] == {(arm, served_by)}, user
            assert second[user] == {(arm, served_by)}, user

        # Stopping the experiment reaches both workers at their next poll (1 s here).
        declare(art, tmp_path, status="stopped")
        deadline = time.monotonic() + 20
        while True:
            answers = [requests.post(f"{base}/v1/recommendations", json={"user_id": u},
                                     timeout=10).json()["experiments"] for u in USERS]
            if all(a == [] for a in answers):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.5)

    # The served log: both workers of each server answered, and logged the same arm.
    by_user: dict[str, set[str]] = defaultdict(set)
    pids: set[str] = set()
    for path in part_files(log_dir(art)):
        pid = re.match(r"part-(\d+)-", path.name)
        for row in pq.read_table(path).to_pylist():
            if row["assignments"]:
                by_user[row["user_id"]].add(row["assignments"][0]["arm"])
                pids.add(pid.group(1) if pid else path.name)
    assert len(pids) >= 3, pids  # at least two workers of one server and one of the other
    assert {u: arms for u, arms in by_user.items()} == {u: {a} for u, a in expected.items()}


def test_the_forced_arm_header_on_the_real_server(tmp_path: Path) -> None:
    """QA forces an arm with X-Recsys-Arm behind the admin token: honoured by every worker,
    refused with a JSON 403/422 naming the header otherwise, and logged as the arm served."""
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=41)
    declare(art, tmp_path)
    # The users hashed to control, forced to noscore (and the reverse), on fresh connections.
    natural = {u: exp.assign(exp.load(art), u)[0].arm for u in USERS}
    url_headers = {"X-Admin-Token": TOKEN}
    with running_server(art, tmp_path / "forced.log", **ENV) as base:
        for n, user in enumerate(USERS * 2):
            forced = "noscore" if natural[user] == "control" else "control"
            resp = requests.post(f"{base}/v1/recommendations", timeout=10,
                                 json={"user_id": user, "k": 5},
                                 headers={**url_headers, "X-Recsys-Arm": f"scoring={forced}",
                                          "X-Request-Id": f"forced-{n}"})  # fmt: skip
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert (body["experiment"], body["arm"]) == ("scoring", forced), user
            assert body["served_by"] == ("precomputed" if forced == "noscore" else "rerank")

        refusals = {
            "no token": ({"X-Recsys-Arm": "scoring=noscore"}, 403),
            "wrong token": ({"X-Recsys-Arm": "scoring=noscore", "X-Admin-Token": "nope"}, 403),
            "unknown arm": ({**url_headers, "X-Recsys-Arm": "scoring=treatment"}, 422),
            "unknown experiment": ({**url_headers, "X-Recsys-Arm": "ranking=control"}, 422),
            "malformed": ({**url_headers, "X-Recsys-Arm": "scoring"}, 422),
        }
        for case, (headers, status) in refusals.items():
            resp = requests.post(f"{base}/v1/recommendations", json={"user_id": "u1"},
                                 headers=headers, timeout=10)  # fmt: skip
            assert resp.status_code == status, (case, resp.text)
            assert resp.headers["Content-Type"].startswith("application/json"), case
            assert resp.json()["field"] == "X-Recsys-Arm", case
            assert "Traceback" not in resp.text

    logged = {}
    for path in part_files(log_dir(art)):
        for row in pq.read_table(path, columns=["request_id", "assignments"]).to_pylist():
            if row["request_id"].startswith("forced-"):
                logged[row["request_id"]] = row["assignments"]
    assert len(logged) == 2 * len(USERS)
    for n, user in enumerate(USERS * 2):
        forced = "noscore" if natural[user] == "control" else "control"
        assert logged[f"forced-{n}"] == [{"experiment": "scoring", "arm": forced}]


class SteadyTraffic:
    """Background requests for random users during a rollout, counting every answer that is
    not a 200 (a user-visible failure) and the bundles that answered after `mark()`."""

    def __init__(self, base: str, users: list[str]) -> None:
        self.base, self.users = base, users
        self.sent = self.failed = 0
        self.after_mark: set[str] = set()
        self._marked = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def mark(self) -> None:
        self.after_mark.clear()
        self._marked = True

    def _run(self) -> None:
        session = requests.Session()
        n = 0
        while not self._stop.is_set():
            user = self.users[n % len(self.users)]
            n += 1
            try:
                resp = session.post(f"{self.base}/v1/recommendations", timeout=10,
                                    json={"user_id": user, "k": 5})  # fmt: skip
                ok = resp.status_code == 200
                if ok and self._marked:
                    self.after_mark.add(resp.json()["bundle"])
            except requests.RequestException:
                ok = False
            self.sent += 1
            self.failed += not ok
            time.sleep(0.01)


def test_a_broken_canary_is_rolled_back_on_the_real_server(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`recsys rollout start` a bundle that verifies but ignores what users like; real users'
    traffic and events go through the real server; `recsys rollout check` runs while it serves
    (as the hourly DAG does), breaches the CTR guardrail and stops the canary; both workers
    then serve CURRENT to everyone, and no request failed at any point."""
    from tests.warehouse.test_rollout_canary import (
        CONFIG,
        N_ITEMS,
        N_USERS,
        P_LIKED,
        P_OTHER,
        P_PLAY,
        K,
        liked_items,
    )

    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=N_USERS, n_items=N_ITEMS)
    build_bundle(art, "run-b", n_users=N_USERS, n_items=N_ITEMS, seed=1, publish=False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    cli_env = {**os.environ, **ENV}
    started = subprocess.run([sys.executable, "-m", "shared.cli", "rollout", "start", "run-b",
                              "--share", "50%", "--artifacts", str(art)], env=cli_env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert started.returncode == 0, started.stderr
    liked = liked_items(art)
    rng = np.random.default_rng(7)
    users = [f"u{n}" for n in range(N_USERS)]
    clicks: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # arm -> [clicks, exposures]
    with running_server(art, tmp_path / "canary.log", **ENV) as base, \
            SteadyTraffic(base, users) as steady:  # fmt: skip
        session = requests.Session()
        for n, user in enumerate(users):
            resp = session.post(f"{base}/v1/recommendations", json={"user_id": user, "k": K},
                                timeout=10)  # fmt: skip
            assert resp.status_code == 200, resp.text
            data = resp.json()
            assert data["bundle"] == {"control": "run-a", "canary": "run-b"}[data["arm"]]
            events = []
            for pos, it in enumerate(data["items"]):
                base_event = {"user_id": user, "item_id": it["item_id"],
                              "request_id": data["request_id"]}  # fmt: skip
                events.append({"event_id": f"imp-{n}-{pos}", "type": "impression", **base_event})
                if rng.random() < (P_LIKED[pos] if it["item_id"] in liked[n] else P_OTHER):
                    clicks[data["arm"]][0] += 1
                    events.append({"event_id": f"click-{n}-{pos}", "type": "click", **base_event})
                    if rng.random() < P_PLAY:
                        events.append({"event_id": f"play-{n}-{pos}", "type": "play", **base_event})
                clicks[data["arm"]][1] += 1
            assert session.post(f"{base}/v1/events", json={"events": events},
                                timeout=10).status_code == 202  # fmt: skip
        # The logs rotate every 2 s here: wait for this traffic to reach Parquet, then check
        # while the server keeps serving.
        time.sleep(5)
        done = subprocess.run([sys.executable, "-m", "shared.cli", "rollout", "check",
                               "--artifacts", str(art), "--config", str(config), "--json"],
                              env=cli_env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["action"] == "rolled_back", outcome
        assert "guardrail breached: CTR" in outcome["reason"]
        # The steady traffic adds exposures without events, so the warehouse's rates sit
        # below the played ones; the canary's clicks are still a fraction of control's.
        played = {arm: c / e for arm, (c, e) in clicks.items()}
        assert played["canary"] < 0.5 * played["control"], played
        measured = outcome["values"]["ctr"]
        assert measured["canary"] < 0.5 * measured["control"] and measured["p_value"] < 1e-6
        # Both workers drop the stopped canary at their next poll (1 s).
        deadline = time.monotonic() + 20
        while True:
            answers = [session.post(f"{base}/v1/recommendations", json={"user_id": u},
                                    timeout=10).json() for u in users[:60]]  # fmt: skip
            if all(a["bundle"] == "run-a" and a["arm"] is None for a in answers):
                break
            assert time.monotonic() < deadline, {a["bundle"] for a in answers}
            time.sleep(0.5)
        steady.mark()
        time.sleep(2)
    assert steady.sent > 100 and steady.failed == 0, (steady.sent, steady.failed)
    assert steady.after_mark == {"run-a"}
    assert read_current(art) == "run-a"
    assert [e["action"] for e in rollout.read_events(art)] == ["started", "rolled_back"]
