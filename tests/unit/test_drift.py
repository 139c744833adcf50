"""Input drift checks on small generated data, without Spark: the statistics, the config,
the references kept between runs, and the two drills (docs/monitoring.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from batch.data import drift_drills
from batch.data.generate import GenerateConfig, generate
from batch.drift import checks, profile, stats, store
from batch.drift.profile import Profile
from shared.config import DriftConfig, PipelineConfig
from shared.errors import InputDriftFailed

END = dt.date(2025, 12, 31)
CFG = DriftConfig()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    """30 days of ~8,000 events a day: above drift.min_events, so no check is skipped."""
    out = tmp_path_factory.mktemp("drift-world")
    generate(GenerateConfig(out_dir=out, n_users=3000, n_items=1000, n_events=240_000,
                            seed=11, end_date=END, days=30, n_regions=3))
    table = pq.read_table(out / "interactions.parquet").rename_columns(
        ["user_id", "item_id", "ts", "event_type", "weight"])
    return table, pq.read_table(out / "items.parquet")


def day_profile(table: pa.Table, day: dt.date) -> Profile:
    end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    return profile.build(table.filter(pc.less(table["ts"], end)), None, f"{day}-t", day, CFG)


@pytest.fixture(scope="module")
def history(world: tuple[pa.Table, pa.Table]) -> list[Profile]:
    """The 7 runs before END, newest first (the trailing window; the first is the previous)."""
    return [day_profile(world[0], END - dt.timedelta(days=k)) for k in range(1, 8)]


def by_name(report: checks.DriftReport) -> dict[str, checks.CheckResult]:
    return {c.check: c for c in report.checks}


def evaluate(cur: Profile, history: list[Profile]) -> checks.DriftReport:
    return checks.evaluate(cur, history[0] if history else None, history, {}, 10**6, CFG,
                           now=cur.run_end + 7200)


# ---- statistics ------------------------------------------------------------------------


def test_psi_and_js_of_known_distributions() -> None:
    same = np.array([50.0, 30.0, 20.0])
    assert stats.psi(same, same) == 0.0 and stats.js_divergence(same, same) == 0.0
    # shares 0.5/0.5 vs 0.9/0.1 (smoothing negligible at these counts): PSI =
    # 0.4 ln(0.5/0.9)... computed by hand: (0.5-0.9) ln(0.5/0.9) + (0.5-0.1) ln(0.5/0.1)
    expected = -0.4 * np.log(0.5 / 0.9) + 0.4 * np.log(5.0)
    assert stats.psi(np.array([5e6, 5e6]), np.array([9e6, 1e6])) == pytest.approx(expected, 1e-6)
    # disjoint supports: JS tends to 1 bit; smoothing keeps PSI finite
    assert stats.js_divergence(np.array([1e6, 0.0]), np.array([0.0, 1e6])) == pytest.approx(1, 1e-4)
    assert np.isfinite(stats.psi(np.array([10.0, 0.0]), np.array([0.0, 10.0])))


def test_an_item_absent_on_one_side_is_smoothed_not_infinite() -> None:
    q, p, names = stats.item_bins({"a": 10, "b": 5}, {"a": 10, "c": 5}, top=5)
    assert names == ["a", "b", "c", "(other)"]
    assert q.tolist() == [10, 5, 0, 0] and p.tolist() == [10, 0, 5, 0]
    # b: shares (5.5/17) vs (0.5/17) with alpha 0.5 over 4 bins
    assert stats.psi(q, p, 0.5) == pytest.approx(2 * (5 / 17) * np.log(11), 1e-9)


def test_items_beyond_the_head_are_pooled() -> None:
    q, p, names = stats.item_bins({"a": 9, "b": 5, "c": 1, "d": 1}, {"a": 8, "b": 6, "e": 2}, 2)
    assert names == ["a", "b", "(other)"] and q.tolist() == [9, 5, 2] and p.tolist() == [8, 6, 2]


def test_activity_buckets_are_powers_of_two() -> None:
    assert stats.activity_buckets(np.array([1, 2, 3, 4, 5, 9, 200])).tolist() == \
        [1, 1, 2, 1, 1, 0, 0, 0, 1]


# ---- config ----------------------------------------------------------------------------


def test_a_partial_override_keeps_the_other_default() -> None:
    cfg = PipelineConfig.model_validate(
        {"drift": {"checks": {"volume_drop": {"action": "warn"},
                              "quarantine_share:duplicate": {"threshold": 0.2}}}}).drift
    assert cfg.check("volume_drop").threshold == 0.4 and cfg.check("volume_drop").action == "warn"
    assert cfg.check("quarantine_share:duplicate").threshold == 0.2
    assert cfg.check("quarantine_share:unknown_item").threshold == 0.01
    assert DriftConfig().check("item_psi_prev").action == "warn"


def test_an_unknown_check_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValidationError, match=r"unknown drift check\(s\) \['volum_drop'\].*volume_drop"):
        DriftConfig.model_validate({"checks": {"volum_drop": {"threshold": 1}}})
    with pytest.raises(ValidationError):
        DriftConfig.model_validate({"checks": {"volume_drop": {"action": "page"}}})


# ---- the checks on generated days ----------------------------------------------------


def test_a_normal_day_breaches_nothing(world: tuple[pa.Table, pa.Table],
                                       history: list[Profile]) -> None:
    report = evaluate(day_profile(world[0], END), history)
    assert report.by_status(checks.WARN) == [] and report.by_status(checks.FAIL) == []
    assert report.by_status(checks.SKIPPED) == []
    got = by_name(report)
    assert got["item_psi_prev"].value is not None and got["item_psi_prev"].value < 0.02
    assert got["new_item_share"].value == 0.0  # the catalogue did not change
    assert got["freshness_hours"].value is not None and got["freshness_hours"].value < 1


def test_drill_a_section_share_doubling_warns_on_popularity(
        world: tuple[pa.Table, pa.Table], history: list[Profile]) -> None:  # fmt: skip
    table, items = world
    section = drift_drills.largest_section(table, items, END)
    shifted = drift_drills.shift_section(table, items, END, section, factor=2.0, seed=3)
    of = drift_drills.section_of(items)
    day = shifted.filter(pa.array(drift_drills.day_mask(shifted, END)))["item_id"].to_pylist()
    before = table.filter(pa.array(drift_drills.day_mask(table, END)))["item_id"].to_pylist()
    share = lambda ids: sum(of[i] == section for i in ids) / len(ids)  # noqa: E731
    assert share(day) == pytest.approx(2 * share(before), rel=0.05)
    report = evaluate(day_profile(shifted, END), history)
    got = by_name(report)
    for name in ("item_psi_prev", "item_psi_window", "item_js_prev", "item_js_window"):
        assert got[name].status == "warn", got[name]
        assert got[name].value is not None and got[name].value > got[name].threshold
    assert got["item_psi_prev"].value > 0.06  # noqa: PLR2004 (normal days stay under 0.02)
    assert got["volume_drop"].status == "ok"  # the mix changed, not the volume
    checks.enforce(report, "2025-12-30-t")  # warnings never stop the run


def test_drill_half_the_events_fails_the_run_naming_check_value_and_threshold(
        world: tuple[pa.Table, pa.Table], history: list[Profile]) -> None:  # fmt: skip
    thinned = drift_drills.thin_day(world[0], END, keep=0.5, seed=5)
    report = evaluate(day_profile(thinned, END), history)
    drop = by_name(report)["volume_drop"]
    assert drop.status == "fail" and drop.value is not None and 0.45 < drop.value < 0.55
    with pytest.raises(InputDriftFailed) as err:
        checks.enforce(report, "2025-12-30-t")
    message = str(err.value)
    assert f"volume_drop: value {drop.value:.4g} > threshold 0.4" in message
    assert "CURRENT stays on 2025-12-30-t" in message and err.value.exit_code == 9


def test_the_first_run_skips_comparisons_and_says_so(world: tuple[pa.Table, pa.Table]) -> None:
    report = evaluate(day_profile(world[0], END), [])
    assert report.notes == ["first run: no previous published run, comparisons with it skipped"]
    got = by_name(report)
    for name in ("new_user_share", "new_item_share", "item_psi_prev", "item_js_window",
                 "user_activity_psi"):
        assert got[name].status == "skipped" and "first run" in got[name].detail
    assert got["volume_drop"].status == "ok"  # within one input: needs no earlier run


def test_quarantine_share_per_reason_and_freshness() -> None:
    cur = Profile("2025-12-31-x", "2025-12-31", 1_767_225_600, 1_767_225_600 - 30 * 3600,
                  "2025-12-01", {}, 0, {}, [0] * 9)
    cfg = DriftConfig.model_validate({"checks": {"quarantine_share:duplicate": {"threshold": 0.5}}})
    report = checks.evaluate(cur, None, [], {"duplicate": 300, "unknown_item": 20}, 1000, cfg,
                             now=cur.run_end + 3600)
    got = by_name(report)
    assert (got["quarantine_share:duplicate"].value, got["quarantine_share:duplicate"].status) \
        == (0.3, "ok")
    assert (got["quarantine_share:unknown_item"].value,
            got["quarantine_share:unknown_item"].status) == (0.02, "warn")
    assert (got["freshness_hours"].value, got["freshness_hours"].status) == (30.0, "warn")
    assert (got["input_age_at_run_hours"].value, got["input_age_at_run_hours"].status) \
        == (31.0, "off")
    assert got["volume_drop"].status == "skipped"  # too few events to compare volumes


# ---- what is kept between runs --------------------------------------------------------


def test_references_are_earlier_published_runs_newest_first(tmp_path: Path,
                                                           history: list[Profile]) -> None:
    for p in history[:4]:  # 12-30 ... 12-27
        p.save(tmp_path / "work" / p.run_id)
        store.keep_profile(tmp_path, tmp_path / "work" / p.run_id, p.run_id, keep=3)
    kept = sorted(d.name for d in store.profiles_root(tmp_path).iterdir())
    assert kept == ["2025-12-28-t", "2025-12-29-t", "2025-12-30-t"]
    prev, window = store.references(tmp_path, END, None, window_runs=2)
    assert prev is not None and prev.run_id == "2025-12-30-t"
    assert [p.run_id for p in window] == ["2025-12-30-t", "2025-12-29-t"]
    assert len(prev.users_seen) == len(history[0].users_seen)
    # after a rollback CURRENT is the previous run; a rerun of 12-29 never sees 12-29 or later
    prev, _ = store.references(tmp_path, END, "2025-12-28-t", window_runs=2)
    assert prev is not None and prev.run_id == "2025-12-28-t"
    prev, window = store.references(tmp_path, dt.date(2025, 12, 29), None, window_runs=5)
    assert prev is not None and prev.run_id == "2025-12-28-t" and len(window) == 1


def test_history_is_replaced_per_run_id(tmp_path: Path, world: tuple[pa.Table, pa.Table],
                                        history: list[Profile]) -> None:
    report = evaluate(day_profile(world[0], END), history)
    rows = store.report_rows(report, "2025-12-31")
    store.merge_history(tmp_path, rows)
    table = store.merge_history(tmp_path, rows)  # a rerun of the same run id
    assert table.num_rows == len(report.checks)
    assert set(table["status"].to_pylist()) == {"ok", "off"}
