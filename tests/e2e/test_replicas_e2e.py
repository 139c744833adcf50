"""Two `recsys serve` replicas behind a real HAProxy (online/replicas), with a real
redis-server as their shared real-time store: a rolling restart under a steady load fails
no request, a SIGKILLed replica costs at most the requests it had in flight, and an event
taken by one replica changes what the other serves."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from online.replicas.cluster import Cluster, ClusterSettings
from online.replicas.steady_load import Call, SteadyLoad
from tests.online.bundle_factory import build_bundle

pytestmark = pytest.mark.e2e

USER = "u2"  # has a precomputed list in the factory bundle


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for binary in ("haproxy", "redis-server"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not installed (make setup installs it: apt-get install "
                        f"{binary})")  # fmt: skip
    tmp = tmp_path_factory.mktemp("replicas")
    # The synthetic bundle: these tests are about processes, not about what is served.
    build_bundle(tmp / "artifacts", "run-a", n_users=200, n_items=2000, dim=32, with_ranker=True)
    settings = ClusterSettings(artifacts=tmp / "artifacts", state_dir=tmp / "state",
                               replicas=2, workers=1, redis=True,
                               serve_args=("--log-level", "WARNING"))  # fmt: skip
    with Cluster(settings) as started:
        yield started


def _calls() -> list[Call]:
    """Both kinds: a POST HAProxy must not retry once sent, a GET it may."""
    body = json.dumps({"user_id": USER, "k": 10}).encode()
    return [Call("POST", "/v1/recommendations", body), Call("GET", "/v1/items/m3/similar?k=10")]


def _top_items(base: str) -> list[str]:
    answer = requests.post(f"{base}/v1/recommendations", json={"user_id": USER, "k": 10},
                           timeout=10)  # fmt: skip
    assert answer.status_code == 200
    return [str(it["item_id"]) for it in answer.json()["items"]]


def test_event_through_the_lb_is_seen_by_the_other_replica(cluster: Cluster) -> None:
    first = _top_items(cluster.replica_url(1))
    assert first == _top_items(cluster.replica_url(0))  # same bundle, same answer
    event = {"event_id": f"e2e-{uuid.uuid4().hex}", "type": "dislike", "user_id": USER,
             "item_id": first[0]}  # fmt: skip
    taken = requests.post(f"{cluster.base_url}/v1/events", json={"events": [event]}, timeout=10)
    assert taken.status_code == 202 and taken.json()["accepted"] == 1
    assert taken.json()["realtime_applied"] is True
    by = taken.headers["X-Recsys-Replica"]
    other = cluster.names.index(by) ^ 1  # the replica that did not take it
    # The dislike, recorded in Redis by one replica, hides the item on the other.
    after = _top_items(cluster.replica_url(other))
    assert first[0] not in after and len(after) == 10
    # The idempotency claim is shared too: the same event id is a duplicate there.
    again = requests.post(f"{cluster.replica_url(other)}/v1/events", json={"events": [event]},
                          timeout=10)  # fmt: skip
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 1


def test_rolling_restart_under_load_fails_no_request(cluster: Cluster) -> None:
    before = {name: stat.total for name, stat in cluster.stats().items()}
    with SteadyLoad(cluster.base_url, _calls(), threads=4) as load:
        time.sleep(1.0)
        timings = cluster.rolling_restart()
        time.sleep(1.0)
    tally = load.tally
    assert [t.name for t in timings] == ["srv1", "srv2"]
    assert tally.sent > 200, tally.summary()
    assert tally.failed == [], tally.summary()  # sent == ok: nothing lost while rolling
    # Both restarted replicas took traffic again (HAProxy's own count of requests each got).
    after = cluster.stats()
    assert all(after[name].total > before[name] for name in cluster.names)
    assert all(stat.status == "UP" for stat in after.values())


def test_killed_replica_costs_at_most_its_requests_in_flight(cluster: Cluster) -> None:
    try:
        with SteadyLoad(cluster.base_url, _calls(), threads=4, pause_s=0.0) as load:
            time.sleep(1.5)
            in_flight = cluster.stats()["srv1"].current_sessions
            kill_sent = time.monotonic()
            cluster.kill(0)  # returns once its port refuses connections
            killed_at = time.monotonic()
            time.sleep(2.0)  # past HAProxy's detection (2 failed checks, 0.5 s apart)
        tally = load.tally
        failed = tally.failed
        assert tally.sent > 200, tally.summary()
        # Only requests the replica had taken can be lost: in flight during the kill (none
        # sent after it: those met a refused connection and were redispatched), at most
        # maxconn of them (what HAProxy lets one replica hold), and no GET (retried on the
        # other replica).
        assert all(o.started <= killed_at and o.ended >= kill_sent for o in failed), failed
        assert len(failed) <= cluster.settings.maxconn, (tally.summary(), in_flight)
        assert [o for o in failed if o.method == "GET"] == []
        assert cluster.stats()["srv1"].status.startswith("DOWN")
        late = [o for o in tally.outcomes if o.started > killed_at + 0.1]
        assert late and all(o.ok and o.replica == "srv2" for o in late)
        print(f"kill: {tally.summary()}, in flight on srv1 just before: {in_flight}")
    finally:
        cluster.revive(0)
    assert _top_items(cluster.replica_url(0))
