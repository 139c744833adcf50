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
