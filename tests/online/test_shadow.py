"""Shadow scoring on the request path: a real app over real small bundles, a shadow declared
in ART/experiments.json, the shadow log read back from its Parquet files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from flask import Flask
from prometheus_client import REGISTRY

from online.recommend import Answer
from shared import experiments as exp
from shared.errors import ExperimentsError
from shared.parquet_log import part_files
from shared.rank_overlap import overlap
from shared.shadow_log import log_dir
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import make_app

USERS = [f"u{n}" for n in range(39)]


def shadow_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("recsys_shadow_total", {"outcome": outcome}) or 0.0


def declare_shadow(artifacts: Path, **shadow: Any) -> None:
    exp.write(artifacts, exp.ExperimentsFile.model_validate({"shadow": shadow}))


def started(artifacts: Path, **overrides: Any) -> Flask:
    # A budget no loaded test host overruns: these tests compare lists, not fallbacks.
    app = make_app(artifacts, **{"budget_ms": 10_000, "log_flush_seconds": 0.05, **overrides})
    app.extensions["recsys"].store.ensure_started()
    return app


def shadow_rows(app: Flask) -> list[dict[str, Any]]:
    service = app.extensions["recsys"]
    assert service.shadow.wait_idle()
    service.shadow.close()  # writes the log's Parquet files
    rows: list[dict[str, Any]] = []
    for path in part_files(log_dir(service.config.artifacts)):
        rows.extend(pq.read_table(path).to_pylist())
    return sorted(rows, key=lambda r: r["request_id"])


def ask(app: Flask, user: str, k: int = 10) -> dict[str, Any]:
    client = app.test_client()
    resp = client.post("/v1/recommendations", json={"user_id": user, "k": k},
                       headers={"X-Request-Id": f"req-{user}"})  # fmt: skip
    assert resp.status_code == 200, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def answers(app: Flask) -> dict[str, list[Any]]:
    """Per user: the items and their scores (took_ms and request ids differ by nature)."""
    out = {}
    for user in USERS[:12]:
        data = ask(app, user)
        out[user] = [(it["item_id"], it["score"]) for it in data["items"]] + [
            data["bundle"], data["served_by"], data["scorer"]]  # fmt: skip
    return out


@pytest.fixture
def baseline(artifacts: Path) -> Iterator[dict[str, list[Any]]]:
    """What the app answers with no experiments file (no shadow)."""
    app = started(artifacts)
    yield answers(app)
    app.extensions["recsys"].store.stop()


# ---- the overlap numbers -----------------------------------------------------------------


def test_overlap_of_two_lists() -> None:
    same = overlap(["a", "b", "c"], ["a", "b", "c"])
    assert (same.jaccard, same.common, same.kendall_tau, same.spearman) == (1.0, 3, 1.0, 1.0)
    # common a, b, c; served ranks 0 1 2, shadow ranks 0 2 1: pairs + + -, d = 0 1 1
    some = overlap(["a", "b", "c", "d"], ["a", "c", "b", "e"])
    assert some.jaccard == pytest.approx(3 / 5)
    assert some.kendall_tau == pytest.approx(1 / 3)
    assert some.spearman == pytest.approx(1 - 6 * 2 / (3 * 8))
    reversed_ = overlap(list("abcde"), list("edcba"))
    assert (reversed_.kendall_tau, reversed_.spearman) == (-1.0, -1.0)
    disjoint = overlap(["a", "b"], ["c", "d"])
    assert (disjoint.jaccard, disjoint.common, disjoint.kendall_tau) == (0.0, 0, None)
    assert overlap([], []).jaccard == 1.0


def test_a_shadow_names_a_bundle_or_a_scorer(artifacts: Path) -> None:
    with pytest.raises(ExperimentsError, match=r"shadow\.bundle/scorer: neither is set"):
        exp.parse('{"shadow": {"share": 0.5}}')
    with pytest.raises(ExperimentsError, match=r"shadow\.share"):
        exp.parse('{"shadow": {"scorer": "none", "share": 1.5}}')
    with pytest.raises(ExperimentsError, match=r"shadow\.shadow_bundle|shadow: Extra"):
        exp.parse('{"shadow": {"scorer": "none", "shadow_bundle": "x"}}')
    assert exp.parse('{"shadow": {"scorer": "none"}}').shadow == exp.Shadow(scorer="none",
                                                                            share=0.05)
    with pytest.raises(ExperimentsError, match="shadow.bundle: no published run 'nope'"):
        exp.check_bundles(exp.parse('{"shadow": {"bundle": "nope"}}'), artifacts)
    assert exp.parse('{"shadow": {"bundle": "run-b"}}').arm_bundles() == {"run-b"}


# ---- on the request path -----------------------------------------------------------------


def test_a_shadow_identical_to_serving_agrees_fully_and_changes_nothing(
    artifacts: Path, baseline: dict[str, list[Any]]
) -> None:
    declare_shadow(artifacts, scorer="als-dot", share=1.0)  # the bundle's own scorer
    before = shadow_total("scored")
    app = started(artifacts)
    assert answers(app) == baseline  # same items, scores, bundle and path as without shadow
    rows = shadow_rows(app)
    assert shadow_total("scored") - before == len(USERS[:12])
    assert [r["request_id"] for r in rows] == sorted(f"req-{u}" for u in USERS[:12])
    for r in rows:
        assert (r["jaccard"], r["kendall_tau"], r["spearman"]) == (1.0, 1.0, 1.0)
        assert (r["bundle"], r["shadow_bundle"], r["scorer"], r["shadow_scorer"]) == (
            "run-a", "run-a", "als-dot", "als-dot")
        assert r["shadow"] == "bundle=served,scorer=als-dot"
        assert (r["k"], r["n_served"], r["n_shadow"], r["common"]) == (10, 10, 10, 10)
        assert r["shadow_served_by"] == "rerank" and r["shadow_latency_ms"] > 0


def test_a_different_bundle_overlaps_less_and_changes_nothing(
    artifacts: Path, baseline: dict[str, list[Any]]
) -> None:
    build_bundle(artifacts, "run-b", seed=7, publish=False)  # other factors: other rows
    declare_shadow(artifacts, bundle="run-b", share=1.0)
    app = started(artifacts)
    assert answers(app) == baseline
    rows = shadow_rows(app)
    assert len(rows) == 12
    assert {(r["bundle"], r["shadow_bundle"], r["shadow"]) for r in rows} == {
        ("run-a", "run-b", "bundle=run-b,scorer=served")}
    assert all(0.0 <= r["jaccard"] < 1.0 for r in rows)
    mean = sum(r["jaccard"] for r in rows) / len(rows)
    assert mean < 0.5, mean  # unrelated random factors share few of the top 10
    for r in rows:  # the log's numbers are overlap()'s of the two lists
        assert r["common"] == round(r["jaccard"] * (20 - r["common"]))


def test_the_no_rerank_scorer_as_shadow_logs_the_precomputed_path(artifacts: Path) -> None:
    declare_shadow(artifacts, scorer="none", share=1.0)
    app = started(artifacts)
    ask(app, "u3")
    (row,) = shadow_rows(app)
    assert (row["scorer"], row["shadow_scorer"], row["shadow_served_by"]) == (
        "als-dot", None, "precomputed")
    assert 0.0 <= row["jaccard"] <= 1.0


def test_share_zero_shadows_nothing(artifacts: Path) -> None:
    declare_shadow(artifacts, scorer="none", share=0.0)
    app = started(artifacts)
    before = {o: shadow_total(o) for o in ("scored", "dropped_queue", "dropped_budget")}
    answers(app)
    assert shadow_rows(app) == []
    assert {o: shadow_total(o) for o in before} == before


def test_a_slow_request_is_not_shadowed(artifacts: Path, baseline: dict[str, list[Any]]) -> None:
    declare_shadow(artifacts, scorer="none", share=1.0)
    app = started(artifacts, shadow_max_budget_share=0.0)  # any request used "most" of it
    before = shadow_total("dropped_budget")
    assert answers(app) == baseline
    assert shadow_total("dropped_budget") - before == 12
    assert shadow_rows(app) == []


def test_a_full_queue_drops_and_counts_instead_of_blocking(
    artifacts: Path, baseline: dict[str, list[Any]]
) -> None:
    declare_shadow(artifacts, scorer="none", share=1.0)
    app = started(artifacts, shadow_threads=1, shadow_queue_size=1)
    runner = app.extensions["recsys"].shadow
    busy, release = threading.Event(), threading.Event()
    real = runner.recommender.recommend

    def stuck(*args: Any, **kwargs: Any) -> Answer:
        busy.set()
        release.wait(30)
        return real(*args, **kwargs)

    runner.recommender.recommend = stuck
    before = {o: shadow_total(o) for o in ("scored", "dropped_queue")}
    first = ask(app, "u0")
    assert busy.wait(10)  # the one thread holds job 1; the queue (size 1) is empty
    t0 = time.perf_counter()
    rest = {u: ask(app, u) for u in USERS[1:12]}  # job 2 queues, jobs 3.. are dropped
    assert time.perf_counter() - t0 < 10  # answered while the shadow thread is stuck
    assert shadow_total("dropped_queue") - before["dropped_queue"] == 10
    got = {"u0": first, **rest}
    assert {u: [(it["item_id"], it["score"]) for it in d["items"]] + [
        d["bundle"], d["served_by"], d["scorer"]] for u, d in got.items()} == baseline
    release.set()
    rows = shadow_rows(app)
    assert [r["request_id"] for r in rows] == ["req-u0", "req-u1"]
    assert shadow_total("scored") - before["scored"] == 2


def test_a_shadow_that_raises_is_counted_and_never_affects_the_answer(
    artifacts: Path, baseline: dict[str, list[Any]]
) -> None:
    build_bundle(artifacts, "run-b", seed=7, publish=False)
    declare_shadow(artifacts, bundle="run-b", share=1.0)
    app = started(artifacts)
    runner = app.extensions["recsys"].shadow

    def broken(*args: Any, **kwargs: Any) -> Answer:
        raise RuntimeError("shadow model exploded")

    runner.recommender.recommend = broken
    before = {o: shadow_total(o) for o in ("scored", "error")}
    assert answers(app) == baseline
    assert runner.wait_idle()
    assert shadow_total("error") - before["error"] == 12
    assert shadow_total("scored") == before["scored"]
    assert shadow_rows(app) == []
