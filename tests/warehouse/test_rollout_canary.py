"""Canary rollouts end to end: `recsys rollout start` (the real CLI), traffic through the
real Flask app with a click model, the events posted to /v1/events, the service closed
(logs flushed), then `recsys rollout check` on the warehouse it rebuilds.

The click model: user u likes the 40 items the good bundle (run-a) scores highest for them;
an item shown at position i is clicked with P_LIKED[i] when liked, P_OTHER otherwise, and a
click is played with P_PLAY. A broken canary (built from another seed: its checksums hold,
its lists ignore what users like) loses most clicks and is rolled back automatically; a
healthy one (the same model under a new run id) holds and is promoted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from shared import bundle_layout as layout
from shared import experiments as exp
from shared import rollout
from shared.bundle import read_current, run_dir
from shared.privacy import KEY_ENV, MODE_ENV
from shared.warehouse import warehouse_path
from tests.conftest import use_development_key
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import make_app, recommend

N_USERS, N_ITEMS, K = 400, 300, 10
P_LIKED = (0.35, 0.3, 0.25, 0.22, 0.2, 0.18, 0.16, 0.14, 0.12, 0.1)  # mean 0.202
P_OTHER = 0.04
P_PLAY = 0.6
# Thresholds sized to 400 users at 50 %: the defaults wait for 500 users per arm.
CONFIG = {"rollout": {"min_users": 100, "min_requests": 100, "hold_hours": 0, "alpha": 0.01}}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True,
                          text=True, timeout=180, env=env)  # fmt: skip


def liked_items(art: Path, run_id: str = "run-a", top: int = 40) -> list[set[str]]:
    bundle = run_dir(art, run_id)
    users = np.load(bundle / layout.USER_FACTORS)
    items = np.load(bundle / layout.ITEM_FACTORS)
    scores = users @ items.T
    return [{f"m{i}" for i in np.argsort(-row)[:top]} for row in scores]


def play_traffic(art: Path, liked: list[set[str]], seed: int) -> dict[str, dict[str, Any]]:
    """One request per user through the real app, impressions, clicks and plays posted to
    /v1/events; returns per arm: users, exposures, clicks and the bundles that answered."""
    rng = np.random.default_rng(seed)
    app = make_app(art, max_content_length=256 * 1024)
    app.extensions["recsys"].store.ensure_started()
    client = app.test_client()
    seen: dict[str, dict[str, Any]] = {}
    for n in range(N_USERS):
        user = f"u{n}"
        data = recommend(client, user_id=user, k=K)
        arm = seen.setdefault(data["arm"], {"users": 0, "exposures": 0, "clicks": 0, "bundles": set()})
        arm["users"] += 1
        arm["exposures"] += len(data["items"])
        arm["bundles"].add(data["bundle"])
        events = []
        for pos, it in enumerate(data["items"]):
            base = {"user_id": user, "item_id": it["item_id"], "request_id": data["request_id"]}
            events.append({"event_id": f"imp-{n}-{pos}", "type": "impression", **base})
            p = P_LIKED[pos] if it["item_id"] in liked[n] else P_OTHER
            if rng.random() < p:
                arm["clicks"] += 1
                events.append({"event_id": f"click-{n}-{pos}", "type": "click", **base})
                if rng.random() < P_PLAY:
                    events.append({"event_id": f"play-{n}-{pos}", "type": "play", **base})
        assert client.post("/v1/events", json={"events": events}).status_code == 202
    app.extensions["recsys"].close()  # both logs flushed to Parquet
    return seen


def served_after(art: Path) -> tuple[set[str], set[str | None]]:
    """Bundles and arms a fresh service gives every user (it reads the file at start)."""
    app = make_app(art)
    app.extensions["recsys"].store.ensure_started()
    client = app.test_client()
    bundles, arms = set(), set()
    for n in range(N_USERS):
        data = recommend(client, user_id=f"u{n}", k=K)
        bundles.add(data["bundle"])
        arms.add(data["arm"])
    app.extensions["recsys"].close()
    return bundles, arms


@pytest.fixture
def art(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a", n_users=N_USERS, n_items=N_ITEMS)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return art


def test_a_broken_canary_is_rolled_back_by_the_check(art: Path, tmp_path: Path) -> None:
    # Another seed: a bundle that verifies, with lists unrelated to what users like.
    build_bundle(art, "run-b", n_users=N_USERS, n_items=N_ITEMS, seed=1, publish=False)
    started = cli("rollout", "start", "run-b", "--share", "50%", "--artifacts", str(art))
    assert started.returncode == 0, started.stderr
    assert "canary-run-b" in started.stdout

    seen = play_traffic(art, liked_items(art), seed=7)
    assert seen["control"]["bundles"] == {"run-a"} and seen["canary"]["bundles"] == {"run-b"}
    ctr = {arm: s["clicks"] / s["exposures"] for arm, s in seen.items()}
    assert ctr["canary"] < 0.5 * ctr["control"]  # the click model did prefer control's lists

    done = cli("rollout", "check", "--artifacts", str(art), "--config",
               str(tmp_path / "config.json"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr  # a rollback is a check that ran
    outcome = json.loads(done.stdout)
    assert outcome["action"] == "rolled_back" and outcome["run_id"] == "run-b"
    values = outcome["values"]
    # The warehouse measured exactly the traffic the test played.
    assert values["users"] == {a: s["users"] for a, s in seen.items()}
    assert values["ctr"]["control"] == pytest.approx(ctr["control"], abs=1e-9)
    assert values["ctr"]["canary"] == pytest.approx(ctr["canary"], abs=1e-9)
    assert values["ctr"]["p_value"] < 1e-6
    reason = outcome["reason"]
    assert f"CTR {ctr['canary']:.4f} vs control {ctr['control']:.4f}" in reason
    assert "one-sided p = " in reason and "< alpha 0.01" in reason
    assert "play rate" in reason  # plays follow clicks: worse too

    file = exp.load(art)
    assert file is not None and rollout.running(file) is None
    stopped = file.experiment("canary-run-b")
    assert stopped is not None and stopped.status == "stopped"
    audit = [json.loads(line) for line in (art / exp.AUDIT_FILE).read_text().splitlines()]
    assert audit[-1]["diff"] == ["canary-run-b: running -> stopped"]
    assert audit[-1]["reason"].startswith("rollout rolled_back: guardrail breached: CTR")
    events = rollout.read_events(art)
    assert [e["action"] for e in events] == ["started", "rolled_back"]
    assert events[-1]["reason"] == reason and events[-1]["values"]["ctr"]["p_value"] < 1e-6
    assert read_current(art) == "run-a"

    con = duckdb.connect(str(warehouse_path(art)), read_only=True)
    try:
        rows = con.execute("SELECT action, run_id, reason, \"values\"->>'$.ctr.canary' "
                           "FROM rollout_events ORDER BY ts, action DESC").fetchall()  # fmt: skip
    finally:
        con.close()
    assert [r[:2] for r in rows] == [("started", "run-b"), ("rolled_back", "run-b")]
    assert rows[1][2] == reason and float(rows[1][3]) == pytest.approx(ctr["canary"])

    bundles, arms = served_after(art)
    assert bundles == {"run-a"} and arms == {None}  # everyone on CURRENT, in no experiment


def test_a_healthy_canary_holds_then_is_promoted(art: Path, tmp_path: Path) -> None:
    build_bundle(art, "run-c", n_users=N_USERS, n_items=N_ITEMS, seed=0, publish=False)
    started = cli("rollout", "start", "run-c", "--share", "0.5", "--artifacts", str(art))
    assert started.returncode == 0, started.stderr
    seen = play_traffic(art, liked_items(art), seed=11)
    assert seen["canary"]["bundles"] == {"run-c"}

    # Too few users for the configured minimum: the guardrails hold, no promotion yet.
    waiting = tmp_path / "waiting.json"
    waiting.write_text(json.dumps({"rollout": {**CONFIG["rollout"], "min_users": 1000}}))
    first = cli("rollout", "check", "--artifacts", str(art), "--config", str(waiting),
                "--auto-promote", "--json")  # fmt: skip
    assert first.returncode == 0, first.stderr
    held = json.loads(first.stdout)
    assert held["action"] == "check_passed"
    assert "CTR and play rate wait for 1000 users per arm" in held["reason"]
    assert read_current(art) == "run-a"

    # Enough users, every guardrail held, but not for hold_hours yet.
    holding = tmp_path / "holding.json"
    holding.write_text(json.dumps({"rollout": {**CONFIG["rollout"], "hold_hours": 24}}))
    second = cli("rollout", "check", "--artifacts", str(art), "--config", str(holding),
                 "--auto-promote", "--json")  # fmt: skip
    assert second.returncode == 0, second.stderr
    held = json.loads(second.stdout)
    assert held["action"] == "check_passed"
    assert held["reason"].startswith("guardrails held; held 0.0 h of 24 h"), held["reason"]
    assert read_current(art) == "run-a"

    done = cli("rollout", "check", "--artifacts", str(art), "--config",
               str(tmp_path / "config.json"), "--auto-promote", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["action"] == "promoted", outcome["reason"]
    assert outcome["values"]["ctr"]["p_value"] > 0.01  # not significantly worse
    assert read_current(art) == "run-c"
    assert [e["action"] for e in rollout.read_events(art)] == ["started", "check_passed", "check_passed",
                                                         "promoted"]
    assert rollout.read_events(art)[-1]["values"]["previous_current"] == "run-a"
    file = exp.load(art)
    stopped = file.experiment("canary-run-c") if file is not None else None
    assert stopped is not None and stopped.status == "stopped"
    con = duckdb.connect(str(warehouse_path(art)), read_only=True)
    try:  # rebuilt for what is served now, as a rollback does
        current = con.execute("SELECT run_id FROM runs WHERE is_current").fetchall()
    finally:
        con.close()
    assert current == [("run-c",)]
    bundles, arms = served_after(art)
    assert bundles == {"run-c"} and arms == {None}


def test_a_check_that_cannot_run_exits_10_and_decides_nothing(art: Path) -> None:
    build_bundle(art, "run-b", n_users=N_USERS, n_items=N_ITEMS, seed=1, publish=False)
    rollout.start(art, "run-b", 0.05)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env[MODE_ENV] = "required"  # the rebuild refuses to run without the production key
    done = cli("rollout", "check", "--artifacts", str(art), env=env)
    assert done.returncode == 10, done.stderr
    assert "error: rollout canary-run-b: the check could not measure the canary" in done.stderr
    assert rollout.current(art) == rollout.Rollout("canary-run-b", "run-b", 0.05)
    assert [e["action"] for e in rollout.read_events(art)] == ["started"]
