"""The feedback event log in the nightly run: events through validation and quarantine,
dislikes out of the published lists, ignored impressions as the re-ranker's negatives."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.context import RunContext
from batch.pipeline.runner import PipelineRunner
from shared.events import EVENT_SCHEMA
from tests.conftest import tiny_config

RUN_DATE = dt.date(2024, 1, 31)
UTC = dt.UTC


def _ts(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def write_events(art: Path, day: str, rows: list[tuple[object, ...]], name: str = "part-1-000001.parquet") -> None:
    """rows: (event_id, type, user_id, item_id, ts, value)."""
    folder = art / "event_log" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    cols = list(zip(*rows, strict=True))
    table = pa.table({
        "event_id": list(cols[0]), "type": list(cols[1]), "user_id": list(cols[2]),
        "item_id": list(cols[3]), "ts": list(cols[4]), "received_at": list(cols[4]),
        "request_id": [None] * len(rows), "value": list(cols[5]),
    }, schema=EVENT_SCHEMA)
    pq.write_table(table, folder / name)


def _inputs(data: Path) -> None:
    data.mkdir(parents=True)
    (data / "interactions.csv").write_text(
        "user_id,item_id,timestamp,event_type,weight\n"
        "u1,a,1700000000,view,1\nu2,b,1700000000,view,1\nu2,c,1700000100,view,1\n")
    (data / "items.csv").write_text("item_id,title,genres\na,A,Drama\nb,B,Drama\nc,C,\nd,D,\n")


D = "2024-01-31"
GOOD_EVENTS = [
    ("e1", "play", "u1", "b", _ts(D, 9), None),
    ("e2", "complete", "u1", "b", _ts(D, 10), 1.0),
    ("e3", "click", "u3", "a", _ts(D, 11), None),
    ("e4", "rating", "u3", "c", _ts(D, 11), 4.5),
    ("e5", "impression", "u2", "a", _ts(D, 8), None),
    ("e6", "dislike", "u2", "d", _ts(D, 8), None),
]
BAD_EVENTS = [  # (..., the reason expected)
    ("e1", "play", "u1", "b", _ts(D, 9), None, "duplicate_event"),  # a resent event
    ("b1", "share", "u1", "a", _ts(D, 9), None, "unknown_event_type"),
    ("b2", "play", None, "a", _ts(D, 9), None, "missing_user_id"),
    ("b3", "play", "u1", None, _ts(D, 9), None, "missing_item_id"),
    ("b4", "play", "u1", "a", None, None, "bad_timestamp"),
    ("b5", "play", "u1", "a", _ts("2024-02-01", 1), None, "future_timestamp"),
    ("b6", "rating", "u1", "a", _ts(D, 9), None, "missing_value"),
    ("b7", "play", "u1", "zzz", _ts(D, 9), None, "unknown_item"),
]


@pytest.mark.spark
def test_events_are_validated_weighted_and_deduplicated_like_any_input(spark, tmp_path: Path) -> None:
    _inputs(tmp_path / "data")
    art = tmp_path / "art"
    write_events(art, D, GOOD_EVENTS + [r[:6] for r in BAD_EVENTS])
    write_events(art, "2024-01-01", [("old", "play", "u9", "a", _ts("2024-01-01"), None)])  # outside 30 days
    write_events(art, "2024-02-01", [("next", "play", "u9", "a", _ts("2024-02-01"), None)])  # tomorrow's run
    ctx = RunContext(tmp_path / "data", art, RUN_DATE,
                     tiny_config(validation={"max_bad_share": 0.9}))  # type: ignore[arg-type]
    stats = PipelineRunner(ctx, spark=spark).run_stage("validate")
    out = ctx.outputs.validate

    clean = pq.read_table(out.clean).to_pylist()
    from_events = sorted((r["user_id"], r["item_id"], r["event_type"], r["weight"])
                         for r in clean if r["event_type"] != "view")
    assert from_events == [("u1", "b", "complete", 3.0), ("u1", "b", "play", 2.0),
                           ("u3", "a", "click", 1.0), ("u3", "c", "rating", 4.5)]
    assert sum(r["event_type"] == "view" for r in clean) == 3  # the base data, untouched
    feedback = sorted((r["user_id"], r["item_id"], r["event_type"]) for r in pq.read_table(out.feedback).to_pylist())
    assert feedback == [("u2", "a", "impression"), ("u2", "d", "dislike")]
    quarantine = pq.read_table(out.event_quarantine).to_pylist()
    assert sorted((q["event_id"], q["reason"]) for q in quarantine) == sorted((r[0], r[6]) for r in BAD_EVENTS)
    dup = next(q for q in quarantine if q["reason"] == "duplicate_event")
    assert dup["row_number"] == len(GOOD_EVENTS) + 1  # its position in the day's file
    assert pq.read_table(out.quarantine).num_rows == 0  # the base input's quarantine is its own

    events = stats["events"]
    assert isinstance(events, dict)
    assert events["files"] == [f"date={D}/part-1-000001.parquet"]
    assert events["rows_read"] == len(GOOD_EVENTS) + len(BAD_EVENTS)
    assert events["by_type"] == {"click": 1, "complete": 1, "dislike": 1, "impression": 1,
                                 "play": 1, "rating": 1}
    assert stats["rows_read"] == 3 + 14 and stats["rows_clean"] == 3 + 4
    assert stats["rows_feedback"] == 2 and stats["rows_quarantined"] == 8
    assert stats["quarantine_reasons"] == {r[6]: 1 for r in BAD_EVENTS}
    assert json.loads(out.stats.read_text())["events"]["by_type"]["play"] == 1


@pytest.mark.spark
def test_without_an_event_log_or_when_switched_off_nothing_is_read(spark, tmp_path: Path) -> None:
    _inputs(tmp_path / "data")
    art = tmp_path / "art"
    ctx = RunContext(tmp_path / "data", art, RUN_DATE, tiny_config())  # type: ignore[arg-type]
    stats = PipelineRunner(ctx, spark=spark).run_stage("validate")
    assert stats["rows_read"] == 3 and stats["events"]["rows_read"] == 0  # type: ignore[index]
    write_events(art, D, GOOD_EVENTS)
    ctx = RunContext(tmp_path / "data", art, RUN_DATE, tiny_config(events={"enabled": False}))  # type: ignore[arg-type]
    stats = PipelineRunner(ctx, spark=spark).run_stage("validate")
    assert stats["rows_read"] == 3 and pq.read_table(ctx.outputs.validate.feedback).num_rows == 0


# The whole night on events posted to a real service (per-type counts, dislikes out of the
# lists, impression negatives on and off): tests/e2e/test_feedback_loop_e2e.py.


@pytest.mark.spark
def test_a_user_first_seen_in_the_event_log_gets_an_id_in_the_bundle_maps(spark, tmp_path: Path) -> None:
    """users.csv lists u1 and u2; u3 exists only through today's events. The night once
    numbered u3's interactions but left u3 out of the users map, and publish failed with
    'Index out of bounds' on the first night after a new user's first play."""
    _inputs(tmp_path / "data")
    (tmp_path / "data" / "users.csv").write_text("user_id,region\nu1,north\nu2,south\n")
    art = tmp_path / "art"
    write_events(art, D, GOOD_EVENTS)  # u3 clicks a and rates c
    ctx = RunContext(tmp_path / "data", art, RUN_DATE, tiny_config())  # type: ignore[arg-type]
    runner = PipelineRunner(ctx, spark=spark)
    runner.run_stage("validate")
    valid_users = {r["user_id"]: r["region"] for r in pq.read_table(ctx.outputs.validate.users).to_pylist()}
    assert valid_users == {"u1": "north", "u2": "south", "u3": None}  # the valid users table has u3
    runner.run_stage("embeddings")
    out = ctx.outputs.embeddings
    users = {r["user_id"]: (r["user_idx"], r["region"]) for r in pq.read_table(out.users).to_pylist()}
    assert set(users) == {"u1", "u2", "u3"} and users["u3"][1] is None
    numbered = {r["user_idx"] for r in pq.read_table(out.interactions, columns=["user_idx"]).to_pylist()}
    assert numbered <= {idx for idx, _ in users.values()}


def test_explicit_negatives_are_added_on_top_of_the_sampled_candidates(spark) -> None:
    """A user with 12 candidates (1 positive), 8 of them ignored impressions, and 3 ignored
    items no source proposed. The sample with impression negatives holds every row of the
    sample without them (they never displace a sampled candidate), plus at most the
    explicit cap; the user with nothing ignored gets the same rows either way."""
    from batch.stages.features import sample_rows

    def rows(explicit_on: bool) -> list[tuple[int, int, int, bool, bool]]:
        out = []
        for item in range(12):  # user 0's candidates; item 0 is the positive
            out.append((0, item, int(item == 0), explicit_on and 1 <= item <= 8, True))
        if explicit_on:
            out += [(0, item, 0, True, False) for item in (100, 101, 102)]
        out += [(1, item, int(item == 0), False, True) for item in range(12)]
        return out

    columns = ["user_idx", "item_idx", "label", "explicit", "candidate"]

    def sample(explicit_on: bool) -> set[tuple[int, int]]:
        frame = spark.createDataFrame(rows(explicit_on), columns)
        kept = sample_rows(frame, seed=7, max_negatives=4, max_explicit=5).collect()
        return {(r["user_idx"], r["item_idx"]) for r in kept}

    off, on = sample(False), sample(True)
    assert {(0, 0), (1, 0)} <= off  # positives are always kept
    assert 4 <= sum(1 for u, _ in off if u == 0) <= 5  # 4 sampled, the positive maybe apart
    assert off <= on  # nothing sampled without them is lost with them
    ignored = {(0, i) for i in [*range(1, 9), 100, 101, 102]}
    assert on - off <= ignored and on - off  # what they add is ignored items only
    assert 5 <= len(on & ignored) <= 5 + 4  # the explicit cap, plus any sampled anyway
    assert {(0, 100), (0, 101), (0, 102)} & on  # some come from outside the candidates
    assert {r for r in on if r[0] == 1} == {r for r in off if r[0] == 1}
