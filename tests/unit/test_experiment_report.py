"""The experiment report on a real DuckDB file laid out like the analysts' warehouse
(tables in schema `analyst`, views in `main`): per-user sums per arm by hand, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from batch.experiments.cli import report
from batch.experiments.report import experiment_report
from shared.warehouse import analyst_warehouse_path, connect_analyst

EXPOSURE_COLUMNS = (
    "request_id VARCHAR, ts TIMESTAMP, user_key VARCHAR, bundle VARCHAR, served_by VARCHAR, "
    "fallback_reason VARCHAR, endpoint VARCHAR, position INTEGER, item_id VARCHAR, score DOUBLE, "
    "sources VARCHAR[], impressed BOOLEAN, clicked BOOLEAN, played BOOLEAN, completed BOOLEAN, "
    "disliked BOOLEAN, rated BOOLEAN, first_outcome_ts TIMESTAMP"
)

# (request, user, arm, latency_ms, fallback_reason, [(item, clicked, played), ...])
REQUESTS = [
    ("r1", "u1", "control", 10, None, [("i1", True, True), ("i2", False, False), ("i3", False, False)]),
    ("r2", "u1", "control", 20, None, [("i1", False, False), ("i4", False, False)]),
    ("r3", "u2", "control", 30, "timeout", [("i5", True, False), ("i6", True, False)]),
    ("r4", "u3", "treatment", 100, None, [("i1", True, True), ("i2", False, False), ("i7", False, False)]),
    ("r5", "u4", "treatment", 200, None, []),  # served nothing: assigned, counted, zero
    ("r6", "u5", "control", 40, None, [("i1", True, False)]),  # u5 is in both arms
    ("r7", "u5", "treatment", 300, None, [("i8", True, True)]),
    ("r8", None, "control", 50, None, [("i2", False, False)]),  # no user: no unit
]


def build_warehouse(artifacts: Path, requests: list, extra_assignments: list | None = None) -> Path:  # type: ignore[type-arg]
    path = analyst_warehouse_path(artifacts)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analyst")
        con.execute("CREATE TABLE analyst.assignments (request_id VARCHAR, ts TIMESTAMP, "
                    "user_key VARCHAR, bundle VARCHAR, experiment VARCHAR, arm VARCHAR)")  # fmt: skip
        con.execute(f"CREATE TABLE analyst.exposures ({EXPOSURE_COLUMNS})")
        con.execute("CREATE TABLE analyst.served_requests (request_id VARCHAR, ts TIMESTAMP, "
                    "user_key VARCHAR, bundle VARCHAR, served_by VARCHAR, fallback_reason VARCHAR, "
                    "is_fallback BOOLEAN, n_items BIGINT, latency_ms DOUBLE, endpoint VARCHAR)")  # fmt: skip
        con.execute("CREATE TABLE analyst.items AS SELECT 'i' || range AS item_id FROM range(1, 11)")
        for k, (rid, user, arm, latency, fallback, items) in enumerate(requests):
            ts = f"2026-12-01 10:{k % 60:02d}:00"
            con.execute("INSERT INTO analyst.assignments VALUES (?, ?, ?, 'b1', 'exp1', ?)",
                        [rid, ts, user, arm])  # fmt: skip
            con.execute("INSERT INTO analyst.served_requests VALUES (?, ?, ?, 'b1', 'ranker', ?, ?, ?, ?, "
                        "'/v1/recommendations')", [rid, ts, user, fallback, fallback is not None,
                                                   len(items), latency])  # fmt: skip
            for pos, (item, clicked, played) in enumerate(items, 1):
                con.execute("INSERT INTO analyst.exposures VALUES (?, ?, ?, 'b1', 'ranker', ?, "
                            "'/v1/recommendations', ?, ?, 1.0, ['als'], true, ?, ?, false, false, "
                            "false, NULL)", [rid, ts, user, fallback, pos, item, clicked, played])  # fmt: skip
        for row in extra_assignments or []:
            con.execute("INSERT INTO analyst.assignments VALUES (?, '2026-12-01 11:00:00', ?, 'b1', ?, ?)", row)
        for name in ("assignments", "exposures", "served_requests", "items"):
            con.execute(f"CREATE VIEW main.{name} AS SELECT * FROM analyst.{name}")
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    # r4 assigned twice (a retried log write) must not double its exposures; r1 is also in
    # another experiment, which must not leak into this one.
    build_warehouse(tmp_path, REQUESTS, [("r4", "u3", "exp1", "treatment"),
                                         ("r1", "u1", "other", "control")])  # fmt: skip
    return tmp_path


def test_report_sql_gives_the_hand_computed_numbers(artifacts: Path) -> None:
    con = connect_analyst(artifacts)
    try:
        r = experiment_report(con, "exp1", {"control": 0.5, "treatment": 0.5})
    finally:
        con.close()
    assert r.user_column == "user_key" and r.requests == 8
    assert r.users_in_several_arms == 1 and r.requests_without_user == 1
    c, t = r.stats.arm("control"), r.stats.arm("treatment")
    # control: u1 (5 exposures, 1 click, 1 play) + u2 (2, 2, 0); treatment: u3 (3, 1, 1) + u4 (0).
    assert (c.users, c.exposures, c.clicks, c.plays) == (2, 7, 3, 1)
    assert (t.users, t.exposures, t.clicks, t.plays) == (2, 3, 1, 1)
    assert c.metrics["ctr"].value == pytest.approx(3 / 7)
    assert t.metrics["play_rate"].value == pytest.approx(1 / 3)
    # Delta method by hand for control CTR: y = [1, 2], x = [5, 2], n = 2, R = 3/7:
    # s_y^2 = 0.5, s_x^2 = 4.5, s_xy = -1.5 -> (0.5 + 2R*1.5 + R^2*4.5) / (2 * 3.5^2).
    R = 3 / 7
    assert c.metrics["ctr"].variance == pytest.approx((0.5 + 3 * R + 4.5 * R * R) / 24.5)
    ctr = t.vs_control["ctr"]  # type: ignore[index]
    assert ctr.lift == pytest.approx((1 / 3) / (3 / 7) - 1)
    assert r.stats.srm.observed == {"control": 2, "treatment": 2} and not r.stats.srm.flagged
    g = r.guardrails
    # control requests r1 r2 r3 r6 r8 (every assigned request, u5's and the userless too)
    assert g["control"].requests == 5 and g["treatment"].requests == 3
    assert g["control"].p99_latency_ms == pytest.approx(float(np.percentile([10, 20, 30, 40, 50], 99)))
    assert g["treatment"].p99_latency_ms == pytest.approx(float(np.percentile([100, 200, 300], 99)))
    assert g["control"].fallback_rate == pytest.approx(0.2) and g["treatment"].fallback_rate == 0.0
    assert (g["control"].distinct_items, g["control"].coverage) == (6, pytest.approx(0.6))
    assert (g["treatment"].distinct_items, g["treatment"].coverage) == (4, pytest.approx(0.4))
    assert any("more than one arm" in w for w in r.warnings())
    doc = r.to_dict()
    assert doc["arms"][1]["vs_control"]["ctr"]["lift"] == pytest.approx(-2 / 9, abs=1e-6)  # type: ignore[index]
    # Two users per arm: the intervals are wide but defined; nothing is NaN in the JSON.
    assert "NaN" not in r.to_json()
    md = r.to_markdown()
    assert "| control | 2 | 7 | 0.4286 |" in md and "-22.22%" in md


def test_a_skewed_split_puts_the_srm_warning_first(tmp_path: Path) -> None:
    build_warehouse(tmp_path, [])
    with duckdb.connect(str(analyst_warehouse_path(tmp_path))) as con:  # 600 vs 400 users
        con.execute("INSERT INTO analyst.assignments SELECT 'r' || range, TIMESTAMP '2026-12-01', "
                    "'u' || range, 'b1', 'exp1', if(range < 600, 'control', 'treatment') FROM range(1000)")  # fmt: skip
        con.execute("INSERT INTO analyst.exposures (request_id, ts, user_key, position, item_id, clicked, played) "
                    "SELECT 'r' || range, TIMESTAMP '2026-12-01', 'u' || range, 1, 'i1', range % 7 = 0, false "
                    "FROM range(1000)")  # fmt: skip
    con = connect_analyst(tmp_path)
    try:
        r = experiment_report(con, "exp1", {"control": 1, "treatment": 1})
    finally:
        con.close()
    assert r.stats.srm.observed == {"control": 600, "treatment": 400}
    assert r.stats.srm.flagged and r.stats.srm.p_value < 1e-9
    assert r.warnings()[0].startswith("SAMPLE RATIO MISMATCH")
    md = r.to_markdown()
    assert md.index("SAMPLE RATIO MISMATCH") < md.index("## CTR")
    # No served_requests rows: the guardrails fall back to exposures for the fallback rate.
    assert r.guardrails["control"].requests == 600 and r.guardrails["control"].fallback_rate == 0.0
    assert r.guardrails["control"].p99_latency_ms is None


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(report)
    return app


def test_cli_writes_json_markdown_and_png(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "exp1.json"
    result = CliRunner().invoke(cli(), ["exp1", "--artifacts", str(artifacts), "--out", str(out),
                                        "--share", "control=50", "--share", "treatment=50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["shares_declared"] is True and doc["control"] == "control"
    assert doc["arms"][0]["clicks"] == 3 and doc["srm"]["flagged"] is False
    assert math.isclose(doc["arms"][0]["metrics"]["ctr"]["value"], 3 / 7, rel_tol=1e-5)
    assert out.with_suffix(".md").read_text().startswith("# Experiment `exp1`")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_name_the_problem_and_exit_code(artifacts: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli(), ["nope", "--artifacts", str(artifacts), "--out", str(tmp_path / "x.json")])
    assert unknown.exit_code == 2 and "no assignments for experiment 'nope'" in unknown.output
    missing = runner.invoke(cli(), ["exp1", "--artifacts", str(tmp_path / "none")])
    assert missing.exit_code == 8 and "no warehouse" in missing.output
    undeclared = runner.invoke(cli(), ["exp1", "--artifacts", str(artifacts), "--share", "control=1",
                                       "--out", str(tmp_path / "y.json")])  # fmt: skip
    assert undeclared.exit_code == 2 and "no declared share" in undeclared.output
    bad = runner.invoke(cli(), ["exp1", "--artifacts", str(artifacts), "--share", "control"])
    assert bad.exit_code == 2 and "ARM=SHARE" in bad.output
