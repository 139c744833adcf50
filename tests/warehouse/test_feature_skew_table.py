"""The warehouse's `feature_skew` (ART/skew_log) and `feature_stats` (the bundles'
monitoring/feature_stats.json) tables, and the canned `feature_stats_train_vs_live`."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.publish.warehouse_build import rebuild
from shared import bundle_layout as layout
from shared import canned_queries
from shared.features import FEATURE_NAMES
from shared.privacy import KEY_ENV, MODE_ENV
from shared.skew_log import SkewLogWriter, log_dir
from shared.warehouse import run_query
from tests.online.bundle_factory import build_bundle

POP = FEATURE_NAMES.index("log_pop_all")


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for var in (KEY_ENV, MODE_ENV):
        os.environ.pop(var, None)
    tmp = tmp_path_factory.mktemp("skew-wh")
    art = tmp / "art"
    bundle = build_bundle(art, "run-a", with_ranker=True, with_feature_stats=True)
    stats = json.loads((bundle / layout.FEATURE_STATS).read_text())
    ref = stats["samples"]["training"]["features"]["log_pop_all"]
    ts = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    with SkewLogWriter(log_dir(art), rotate_seconds=3600) as writer:
        for n in range(40):  # live log_pop_all: the training mean plus 2 standard deviations
            values = [float("nan")] * len(FEATURE_NAMES)
            values[POP] = ref["mean"] + 2 * ref["std"] + (0.1 if n % 2 else -0.1)
            writer.log_row(ts, "run-a", "onnx-int8", f"1-{n // 10}", 100, 0.5, values)
    clean = tmp / "clean"
    clean.mkdir()
    pq.write_table(pa.table({"user_id": ["u0"], "item_id": ["m1"], "ts": [1767225600],
                             "event_type": ["view"], "weight": [1.0]}),
                   clean / "part-0.parquet")  # fmt: skip
    rebuild(art, "run-a", clean)
    return art


def test_tables_hold_the_live_rows_and_the_bundle_stats(art: Path) -> None:
    _, rows = run_query(art, "SELECT count(*), count(DISTINCT sample_id) FROM feature_skew", {})
    assert rows == [(40, 4)]
    _, rows = run_query(art, "SELECT sample, count(*) FROM feature_stats GROUP BY ALL ORDER BY 1", {})
    assert rows == [("candidates", len(FEATURE_NAMES) + 1), ("training", len(FEATURE_NAMES) + 1)]


def test_train_vs_live_shows_the_shifted_feature_first(art: Path) -> None:
    q = canned_queries.get("feature_stats_train_vs_live")
    columns, rows = run_query(art, q.sql, q.bind({}))
    found = [dict(zip(columns, r, strict=True)) for r in rows]
    assert {r["feature"] for r in found} == {"log_pop_all", "score"}  # the columns logged
    top = found[0]
    assert top["feature"] == "log_pop_all" and top["live_rows"] == 40
    assert top["mean_shift_sd"] == pytest.approx(2.0, abs=0.01)
    assert top["ref_rows"] >= 39 * 100 and top["live_null_share"] == 0.0  # >= ANN top 100 each
