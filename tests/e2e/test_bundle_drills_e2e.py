"""Bundle drills on the real server (`recsys serve`: gunicorn, 2 workers, loopback): a bad
publish is refused, the old bundle keeps serving, and a worker killed and restarted by
gunicorn comes back on the server's last accepted bundle (never 503).

A synthetic bundle (tests/online/bundle_factory), so no Spark: each drill takes seconds.
Every wait is bounded; counts are asserted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from shared import bundle_layout as layout
from shared.bundle import read_accepted, write_current
from tests.e2e.conftest import publish_clone
from tests.e2e.test_service_e2e import TOKEN, hammering, running_server
from tests.online.bundle_factory import build_bundle, rewrite_array

pytestmark = pytest.mark.e2e

SERVER_ID = "drill-server"
N_USERS = 200
REQUESTS = 60
WAIT_S = 15.0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    art = tmp_path_factory.mktemp("drills") / "artifacts"
    build_bundle(art, "run-a", n_users=N_USERS, n_items=2000, dim=32, with_ranker=True)
    return art


@pytest.fixture(scope="module")
def server(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("drill-server") / "server.log"
    with running_server(artifacts, log, RECSYS_SERVER_ID=SERVER_ID) as base:
        yield base


@pytest.fixture
def serving_a(server: str, artifacts: Path) -> Iterator[str]:
    """The server on run-a, no refusal reported, before and after each drill."""
    assert _wait_clear(server), "the server still reports a refusal before the drill"
    assert set(_workers(server).values()) == {"run-a"}
    assert read_accepted(artifacts, SERVER_ID) == "run-a"
    yield server
    write_current(artifacts, "run-a")  # leave the artifacts as the next drill expects
    assert _wait_clear(server), "the refusal was still reported after CURRENT came back"


# --- reading the server ---------------------------------------------------------------


def _metrics(base: str) -> str:
    return requests.get(f"{base}/metrics", timeout=5).text


def _workers(base: str) -> dict[str, str]:
    """pid -> run id of every live worker (recsys_bundle_info: one line per live worker)."""
    out = {}
    for line in _metrics(base).splitlines():
        if line.startswith("recsys_bundle_info{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            out[labels["pid"]] = labels["run_id"]
    return out


def _refusals(base: str) -> float:
    found = re.search(r'^recsys_bundle_reloads_total\{result="refused"\} (\S+)$', _metrics(base),
                      re.MULTILINE)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def _until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def _wait_clear(base: str) -> bool:
    """Every worker serves what CURRENT names: 10 /readyz answers in a row without refusal."""
    deadline = time.monotonic() + WAIT_S
    streak = 0
    while streak < 10:
        if time.monotonic() > deadline:
            return False
        body = requests.get(f"{base}/readyz", timeout=5).json()
        streak = streak + 1 if body.get("refused") is None else 0
    return True


def _recommend(base: str, user: str = "u1") -> requests.Response:
    return requests.post(f"{base}/v1/recommendations", json={"user_id": user, "k": 5}, timeout=10)


# --- the bad publishes ----------------------------------------------------------------


def _nan_user_factors(artifacts: Path, run_id: str = "run-nan") -> tuple[str, str]:
    """A contents-invalid bundle whose checksums match (re-signed), as in production."""
    run = publish_clone(artifacts, run_id, publish=False)

    def all_nan(a: np.ndarray) -> None:
        a[:] = np.nan

    rewrite_array(run, layout.USER_FACTORS, all_nan)
    write_current(artifacts, run_id)
    return run_id, f"{layout.USER_FACTORS}: {N_USERS} of {N_USERS} rows not finite"


def _missing_run(artifacts: Path) -> tuple[str, str]:
    write_current(artifacts, "run-gone")
    return "run-gone", "does not exist"


def _half_copied(artifacts: Path) -> tuple[str, str]:
    """An interrupted copy: manifest present, one file missing, another cut in half."""
    run = publish_clone(artifacts, "run-half", publish=False)
    (run / layout.CANDIDATE_SCORES).unlink()
    cut = run / layout.USER_FACTORS
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    write_current(artifacts, "run-half")
    return "run-half", f"missing files ['{layout.CANDIDATE_SCORES}']"


BAD_PUBLISHES: dict[str, Callable[[Path], tuple[str, str]]] = {
    "contents-invalid": _nan_user_factors,
    "missing-run": _missing_run,
    "half-copied": _half_copied,
}


def _assert_reports_refusal(base: str, run_id: str, reason: str) -> None:
    for _ in range(10):  # answered by either worker: each must say it
        body = requests.get(f"{base}/readyz", timeout=5).json()
        assert body["ready"] is True and body["bundle"] == "run-a", body
        assert body["refused"]["run_id"] == run_id and reason in body["refused"]["error"], body


@pytest.mark.parametrize("bad", sorted(BAD_PUBLISHES))
def test_a_restarted_worker_serves_the_last_accepted_bundle(
    serving_a: str, artifacts: Path, bad: str
) -> None:
    """(a) contents-invalid, (b) CURRENT at a missing run, (c) CURRENT at a half-copied run:
    refused by both workers; one is killed (-9) and restarted by gunicorn; no request gets
    503 and every worker, the new one included, serves run-a."""
    base = serving_a
    before = _refusals(base)
    run_id, reason = BAD_PUBLISHES[bad](artifacts)
    _until(lambda: _refusals(base) >= before + 2, "both workers to refuse the publish")
    for _ in range(10):
        assert _recommend(base).json()["bundle"] == "run-a"

    workers = _workers(base)
    assert len(workers) == 2 and set(workers.values()) == {"run-a"}
    killed = sorted(workers)[0]
    os.kill(int(killed), signal.SIGKILL)
    # The new worker refuses CURRENT's bundle when it starts (counted like any refusal).
    _until(lambda: _refusals(base) >= before + 3, "the restarted worker to refuse it too")

    statuses: Counter[int] = Counter()
    bundles: Counter[str] = Counter()

    def send(n: int) -> None:
        for i in range(n):  # one connection each: both workers take some
            resp = _recommend(base, f"u{i % N_USERS}")
            statuses[resp.status_code] += 1
            if resp.status_code == 200:
                bundles[resp.json()["bundle"]] += 1

    def both_serve() -> bool:
        send(10)  # requests keep flowing while the new worker comes up
        live = _workers(base)
        return len(live) == 2 and killed not in live

    deadline = time.monotonic() + WAIT_S
    while not both_serve() and time.monotonic() < deadline:
        pass
    send(REQUESTS)  # with both workers up
    assert statuses == {200: sum(statuses.values())}, statuses
    assert set(bundles) == {"run-a"} and sum(bundles.values()) >= REQUESTS
    after = _workers(base)
    assert len(after) == 2 and killed not in after and set(after.values()) == {"run-a"}, after
    _assert_reports_refusal(base, run_id, reason)
    assert read_accepted(artifacts, SERVER_ID) == "run-a"  # the refused run never recorded


def test_a_contents_invalid_bundle_is_refused_while_the_old_serves(
    serving_a: str, artifacts: Path
) -> None:
    """(d) Under load, a re-signed NaN bundle is refused (admin reload and pollers alike)
    and not one request fails or leaves run-a."""
    base = serving_a
    before = _refusals(base)
    with hammering(base, "u3", clients=3) as (seen, failures):
        time.sleep(0.5)
        run_id, reason = _nan_user_factors(artifacts, "run-nan-under-load")
        resp = requests.post(f"{base}/admin/reload", headers={"X-Admin-Token": TOKEN}, timeout=60)
        assert resp.status_code == 409
        body: dict[str, Any] = resp.json()
        assert body["status"] == "refused" and body["serving"] == "run-a"
        assert f"bundle {run_id}: {reason}" in body["error"]
        _until(lambda: _refusals(base) >= before + 2, "the other worker to refuse it too")
        time.sleep(0.5)
    assert failures == []
    assert set(seen) == {"run-a"} and seen["run-a"] > 0
    _assert_reports_refusal(base, run_id, reason)
    assert set(_workers(base).values()) == {"run-a"}
