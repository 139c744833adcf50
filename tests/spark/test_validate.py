"""Validation and quarantine on hand-written rows with known answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from batch.context import RunContext
from batch.pipeline.runner import PipelineRunner
from shared.errors import QuarantineThresholdExceeded
from tests.conftest import tiny_config

RUN_DATE = dt.date(2024, 1, 31)
GOOD = [
    ("u1", "a", "1700000000", "view", "1"),
    ("u1", "b", "2023-11-15T10:00:00Z", "view", ""),
    ("u2", "a", "1700000100.5", "click", "2.5"),
    ("u2", "c", "2024-01-31 23:59:59", "view", "1"),
]
BAD = [
    ("", "a", "1700000000", "view", "1", "missing_user_id"),
    ("u3", "", "1700000000", "view", "1", "missing_item_id"),
    ("u3", "a", "not-a-time", "view", "1", "bad_timestamp"),
    ("u3", "a", "2024-02-01T00:00:00Z", "view", "1", "future_timestamp"),
    ("u3", "b", "1700000000", "view", "-4", "bad_weight"),
    ("u3", "zzz", "1700000000", "view", "1", "unknown_item"),
    ("u1", "a", "1700000000", "view", "1", "duplicate"),
]


def _write_inputs(data: Path, rows: list[tuple[str, ...]]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    lines = ["user_id,item_id,timestamp,event_type,weight", *[",".join(r[:5]) for r in rows]]
    (data / "interactions.csv").write_text("\n".join(lines) + "\n")
    (data / "items.csv").write_text(
        'item_id,title,genres\na,"Alpha, the movie",Drama|Comedy\nb,Beta,Drama\nc,Gamma,\n'
    )


def _validate(spark: object, tmp_path: Path, rows: list[tuple[str, ...]], **cfg: object) -> RunContext:
    _write_inputs(tmp_path / "data", rows)
    ctx = RunContext(tmp_path / "data", tmp_path / "art", RUN_DATE, tiny_config(**cfg))  # type: ignore[arg-type]
    PipelineRunner(ctx, spark=spark).run_stage("validate")
    return ctx


@pytest.mark.spark
def test_each_bad_row_is_quarantined_with_its_reason(spark, tmp_path: Path) -> None:
    ctx = _validate(spark, tmp_path, GOOD + BAD, validation={"max_bad_share": 0.9})
    quarantine = spark.read.parquet(str(ctx.outputs.validate.quarantine)).collect()
    got = sorted((r["user_id"] or "", r["item_id"] or "", r["reason"]) for r in quarantine)
    want = sorted((r[0], r[1], r[5]) for r in BAD)
    assert got == want
    # row_number is the line in the file: the header is line 1, GOOD are lines 2-5.
    lines = {r["row_number"]: r["reason"] for r in quarantine}
    assert lines == {len(GOOD) + 2 + i: r[5] for i, r in enumerate(BAD)}
    clean = spark.read.parquet(str(ctx.outputs.validate.clean)).collect()
    assert len(clean) == len(GOOD)
    by_key = {(r["user_id"], r["item_id"]): r for r in clean}
    assert by_key[("u1", "b")]["ts"] == 1700042400  # ISO-8601 parsed to unix seconds
    assert by_key[("u2", "a")]["weight"] == 2.5
    assert by_key[("u1", "b")]["weight"] == 1.0  # empty weight defaults to 1
    titles = {r["item_id"]: r["title"] for r in spark.read.parquet(str(ctx.outputs.validate.items)).collect()}
    assert titles["a"] == "Alpha, the movie"


@pytest.mark.spark
def test_too_many_bad_rows_fail_the_run_but_keep_the_quarantine(spark, tmp_path: Path) -> None:
    with pytest.raises(QuarantineThresholdExceeded, match=r"7 of 11 interaction rows .* above"):
        _validate(spark, tmp_path, GOOD + BAD, validation={"max_bad_share": 0.1})
    quarantine = spark.read.parquet(str(tmp_path / "art/work/2024-01-31/validate/quarantine.parquet"))
    assert quarantine.count() == len(BAD)


def _lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n")


@pytest.mark.spark
def test_validation_drops_or_alters_no_row_without_quarantining_it(spark, tmp_path: Path) -> None:
    """One CSV of mixed bad lines, read as several byte ranges: blank and whitespace-only
    lines, invalid UTF-8 in user_id, six and four fields. Each line is clean or quarantined
    with its reason and its line number (1-based, header = 1), none vanishes or is repaired."""
    body: list[bytes] = []
    want: dict[int, str] = {}
    for n in range(300):
        line = 2 + len(body)
        kind = n % 10
        if kind == 1:
            body.append(b"" if n % 20 == 1 else b"  \t ")
            want[line] = "blank_line"
        elif kind == 3:
            body.append(b"u\xff\xfe%d,a,%d,view,1" % (n, 1700000000 + n))
            want[line] = "bad_encoding"
        elif kind == 5:  # six fields, once read as five: `1` became a 1970 interaction
            extra = (b"u%d,b,%d,view,1,x" if n % 20 == 5 else b"u%d,b,1,view,1,%d")
            body.append(extra % (n, 1700000000 + n))
            want[line] = "wrong_field_count"
        elif kind == 7:
            body.append(b'u%d,"a, b",%d,view' % (n, 1700000000 + n))
            want[line] = "wrong_field_count"
        else:
            body.append(b'u%d,"%s",%d,view,1' % (n, b"abc"[n % 3 : n % 3 + 1], 1700000000 + n))
    body.append(b"u1,a,not-a-time,view,1\r")  # CRLF ending: the \r is not part of the value
    want[2 + len(body) - 1] = "bad_timestamp"
    data = tmp_path / "data"
    _write_inputs(data, [])
    csv_path = data / "interactions.csv"
    csv_path.write_bytes(b"user_id,item_id,timestamp,event_type,weight\n" + b"\n".join(body) + b"\n")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")  # several byte ranges
    try:
        assert spark.read.text(str(csv_path)).rdd.getNumPartitions() >= 3
        ctx = RunContext(data, tmp_path / "art", RUN_DATE, tiny_config(validation={"max_bad_share": 0.9}))  # type: ignore[arg-type]
        stats = PipelineRunner(ctx, spark=spark).run_stage("validate")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    clean = spark.read.parquet(ctx.path("validate", "clean.parquet")).collect()
    quarantine = spark.read.parquet(ctx.path("validate", "quarantine.parquet")).collect()
    assert _lines_in(csv_path) - 1 == len(clean) + len(quarantine) == stats["rows_read"]
    assert {r["row_number"]: r["reason"] for r in quarantine} == want
    assert len(quarantine) == len(want)  # one row per line
    assert not [r for r in clean if "\ufffd" in r["user_id"] or r["ts"] < 1_600_000_000]
    bad_user = next(r for r in quarantine if r["reason"] == "bad_encoding")
    assert bad_user["user_id"].startswith("u\ufffd")  # readable in the quarantine table
    assert stats["quarantine_reasons"] == {
        "blank_line": 30, "bad_encoding": 30, "wrong_field_count": 60, "bad_timestamp": 1,
    }  # fmt: skip


@pytest.mark.spark
def test_parquet_row_number_is_the_row_in_the_file(spark, tmp_path: Path) -> None:
    """Parquet: row_number is the row's position in its file, numbered on through a
    directory's files in name order; a string that is not UTF-8 is bad_encoding."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(users: list[bytes], items: list[str]) -> pa.Table:
        return pa.table({
            "user_id": pa.array(users, pa.binary()).view(pa.string()),  # unchecked bytes
            "item_id": items, "timestamp": [1700000000 + k for k in range(len(users))],
        })  # fmt: skip

    data = tmp_path / "data"
    _write_inputs(data, [])
    (data / "interactions.csv").unlink()
    (data / "interactions").mkdir()
    pq.write_table(table([b"u1", b"u2", b"u3"], ["a", "b", ""]), data / "interactions" / "part-0.parquet",
                   row_group_size=2)  # fmt: skip
    pq.write_table(table([b"u4", b"u\xff5", b"u6", b"u7"], ["a", "a", "zzz", "c"]),
                   data / "interactions" / "part-1.parquet", row_group_size=2)  # fmt: skip
    ctx = RunContext(data, tmp_path / "art", RUN_DATE, tiny_config(validation={"max_bad_share": 0.9}))  # type: ignore[arg-type]
    stats = PipelineRunner(ctx, spark=spark).run_stage("validate")
    quarantine = spark.read.parquet(ctx.path("validate", "quarantine.parquet")).collect()
    assert {r["row_number"]: r["reason"] for r in quarantine} == {
        3: "missing_item_id", 5: "bad_encoding", 6: "unknown_item",
    }  # fmt: skip
    assert stats["rows_read"] == 7 and stats["rows_clean"] == 4


@pytest.mark.spark
def test_failed_run_leaves_no_checkpoints(spark, tmp_path: Path) -> None:
    _write_inputs(tmp_path / "data", GOOD + BAD)
    ctx = RunContext(tmp_path / "data", tmp_path / "art", RUN_DATE,
                     tiny_config(validation={"max_bad_share": 0.1}))  # type: ignore[arg-type]
    runner = PipelineRunner(ctx, spark=spark)
    with pytest.raises(QuarantineThresholdExceeded):
        runner.run_all()
    assert ctx.work.is_dir() and not (ctx.work / "_checkpoints").exists()
    # Another process's checkpoints under the same date are not touched.
    theirs = ctx.work / "_checkpoints" / "other-run"
    theirs.mkdir(parents=True)
    with pytest.raises(QuarantineThresholdExceeded):
        PipelineRunner(ctx, spark=spark).run_stage("validate")
    assert theirs.is_dir() and [p.name for p in (ctx.work / "_checkpoints").iterdir()] == ["other-run"]
