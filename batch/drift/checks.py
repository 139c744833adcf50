"""The input drift checks: each a value, its threshold and action, and a status.

A check breaches when its value exceeds its threshold; its status is then its action
(`warn` or `fail`), else `ok`. `off` records the value and never alerts. A comparison without
its reference (the first run: no previous published run) or with too few events on a side
to mean anything is `skipped`, with the reason in `detail`.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from batch.drift import stats
from batch.drift.profile import Profile
from shared.config import QUARANTINE_CHECK, DriftConfig
from shared.errors import InputDriftFailed

OK, WARN, FAIL, SKIPPED, OFF = "ok", "warn", "fail", "skipped", "off"


@dataclass(frozen=True)
class CheckResult:
    check: str
    value: float | None
    threshold: float
    action: str
    status: str
    detail: str = ""

    def message(self) -> str:
        return (f"drift check {self.check}: value {self.value:.4g} > threshold "
                f"{self.threshold:g} ({self.detail})")


@dataclass
class DriftReport:
    run_id: str
    previous_run: str | None
    window_runs: list[str]
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    volume: dict[str, dict[str, int]] = field(default_factory=dict)

    def by_status(self, status: str) -> list[CheckResult]:
        return [c for c in self.checks if c.status == status]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "previous_run": self.previous_run,
                "window_runs": self.window_runs, "notes": self.notes, "volume": self.volume,
                "checks": [asdict(c) for c in self.checks],
                "warnings": [c.check for c in self.by_status(WARN)],
                "failures": [c.check for c in self.by_status(FAIL)]}  # fmt: skip


class _Builder:
    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg
        self.results: list[CheckResult] = []

    def value(self, name: str, value: float, detail: str) -> None:
        rc = self.cfg.check(name)
        status = OFF if rc.action == "off" else (rc.action if value > rc.threshold else OK)
        self.results.append(CheckResult(name, round(float(value), 6), rc.threshold, rc.action,
                                        status, detail))

    def skip(self, name: str, why: str) -> None:
        rc = self.cfg.check(name)
        self.results.append(CheckResult(name, None, rc.threshold, rc.action,
                                        OFF if rc.action == "off" else SKIPPED, why))


# The feature drift checks of the rank stage (batch/ranker/feature_stats.py) are built the
# same way, into the same report.
CheckBuilder = _Builder


def evaluate(current: Profile, previous: Profile | None, window: list[Profile],
             quarantine_reasons: dict[str, int], rows_read: int, cfg: DriftConfig,
             now: float) -> DriftReport:  # fmt: skip
    """Every check of `current` against the previous published run and the trailing window
    (newest first; may include `previous`). now: wall-clock epoch s (freshness at run time)."""
    report = DriftReport(current.run_id, previous.run_id if previous else None,
                         [p.run_id for p in window], volume=current.volume)
    if previous is None:
        report.notes.append("first run: no previous published run, comparisons with it skipped")
    b = _Builder(cfg)
    _volume(b, current)
    _new_ids(b, current, previous)
    _popularity(b, current, previous, "prev")
    _popularity(b, current, _pooled(window), "window")
    _activity(b, current, window)
    _quarantine(b, quarantine_reasons, rows_read)
    _freshness(b, current, now)
    report.checks = b.results
    return report


def enforce(report: DriftReport, current_run: str | None) -> None:
    """Raise InputDriftFailed naming every failed check, its value and threshold."""
    failed = report.by_status(FAIL)
    if failed:
        stays = f"CURRENT stays on {current_run}" if current_run else "nothing is published"
        raise InputDriftFailed(
            f"run {report.run_id} stopped before publish by input drift: "
            + "; ".join(c.message() for c in failed)
            + f". {stays}. Fix the input, or change drift.checks.<name> (threshold/action)."
        )


def _volume(b: _Builder, current: Profile) -> None:
    run_day = dt.date.fromisoformat(current.run_date)
    first = dt.date.fromisoformat(current.first_day) if current.first_day else run_day
    days = [run_day - dt.timedelta(days=k) for k in range(b.cfg.volume_days, 0, -1)]
    earlier = [d.isoformat() for d in days if d >= first]
    day = current.volume.get(run_day.isoformat(), {})
    names = ("volume_drop", "volume_spike", "type_volume_drop")
    if not earlier:
        for name in names:
            b.skip(name, "no earlier day in the input to compare the run date with")
        return
    totals = [sum(current.volume.get(d, {}).values()) for d in earlier]
    usual = statistics.median(totals)
    n = sum(day.values())
    if usual < b.cfg.min_daily_events:
        for name in names:
            b.skip(name, f"usual day {usual:g} events < drift.min_daily_events "
                   f"{b.cfg.min_daily_events}")
        return
    detail = f"run date {n} events, median of the {len(earlier)} days before {usual:g}"
    b.value("volume_drop", max(0.0, 1 - n / usual), detail)
    b.value("volume_spike", max(0.0, n / usual - 1), detail)
    worst: tuple[float, str] | None = None
    types = sorted({t for d in earlier for t in current.volume.get(d, {})})
    for t in types:
        t_usual = statistics.median(current.volume.get(d, {}).get(t, 0) for d in earlier)
        if t_usual >= b.cfg.min_type_events:
            drop = max(0.0, 1 - day.get(t, 0) / t_usual)
            if worst is None or drop > worst[0]:
                worst = (drop, f"{t}: run date {day.get(t, 0)}, usual {t_usual:g}")
    if worst is None:
        b.skip("type_volume_drop", f"no event type with a usual day of >= "
               f"drift.min_type_events {b.cfg.min_type_events}")
    else:
        b.value("type_volume_drop", worst[0], worst[1])


def _new_ids(b: _Builder, current: Profile, previous: Profile | None) -> None:
    for name, recent, seen in (("new_user_share", current.recent_users, "users_seen"),
                               ("new_item_share", current.recent_items, "items_seen")):
        if previous is None:
            b.skip(name, "first run: no previous published run")
        elif current.recent_events < b.cfg.min_events:
            b.skip(name, f"recent window {current.recent_events} events < drift.min_events "
                   f"{b.cfg.min_events}")
        else:
            new = len(recent) - int(pc.sum(pc.is_in(recent, getattr(previous, seen))).as_py() or 0)
            kind = name.split("_")[1]
            b.value(name, new / len(recent) if len(recent) else 0.0,
                    f"{new} of {len(recent)} active {kind}s not in {previous.run_id}")


def _pooled(window: list[Profile]) -> Profile | None:
    """The window's runs as one reference: item counts and activity buckets summed."""
    if not window:
        return None
    items: dict[str, int] = {}
    for p in window:
        for k, v in p.item_counts.items():
            items[k] = items.get(k, 0) + v
    activity = np.sum([p.activity for p in window], axis=0).tolist()
    return Profile(run_id=f"{len(window)} runs", run_date="", run_end=0, newest_ts=None,
                   first_day=None, volume={}, recent_events=sum(items.values()),
                   item_counts=items, activity=activity)


def _popularity(b: _Builder, current: Profile, ref: Profile | None, side: str) -> None:
    names = (f"item_psi_{side}", f"item_js_{side}")
    why = _comparable(b.cfg, current, ref, "previous published run" if side == "prev"
                      else "published run in the window")
    if why or ref is None:
        for name in names:
            b.skip(name, why)
        return
    q, p, _ = stats.item_bins(current.item_counts, ref.item_counts, b.cfg.top_items)
    _excess(b, names, q, p, f"{current.recent_events} vs {ref.recent_events} events ({ref.run_id})")


def _excess(b: _Builder, names: tuple[str, ...], q: np.ndarray, p: np.ndarray,
            what: str) -> None:  # fmt: skip
    """PSI (and JS) above the sampling noise floor of these bins and counts (stats.noise_floor):
    what a shift adds on top of what two samples of one distribution differ by anyway."""
    floor = stats.noise_floor(len(q), q.sum(), p.sum())
    raw_psi = stats.psi(q, p, b.cfg.smoothing)
    detail = f"{len(q)} bins, {what}; raw PSI {raw_psi:.4f}, noise floor {floor:.4f}"
    b.value(names[0], max(0.0, raw_psi - floor), detail)
    if len(names) > 1:
        raw_js = stats.js_divergence(q, p, b.cfg.smoothing)
        b.value(names[1], max(0.0, raw_js - floor * stats.JS_PER_PSI),
                f"{detail}; raw JS {raw_js:.5f} bits, noise floor {floor * stats.JS_PER_PSI:.5f}")


def _comparable(cfg: DriftConfig, current: Profile, ref: Profile | None, what: str) -> str:
    if ref is None:
        return f"first run: no {what} to compare with"
    small = min(current.recent_events, ref.recent_events)
    if small < cfg.min_events:
        return (f"recent events {current.recent_events} vs {ref.recent_events}: below "
                f"drift.min_events {cfg.min_events}")
    return ""


def _activity(b: _Builder, current: Profile, window: list[Profile]) -> None:
    ref = _pooled(window)
    why = _comparable(b.cfg, current, ref, "published run in the window")
    if why or ref is None:
        b.skip("user_activity_psi", why)
        return
    cur, prev = np.asarray(current.activity), np.asarray(ref.activity)
    _excess(b, ("user_activity_psi",), cur, prev,
            f"users per activity bucket {stats.bucket_labels()}: {cur.tolist()} vs "
            f"{prev.tolist()} ({ref.run_id})")


def _quarantine(b: _Builder, reasons: dict[str, int], rows_read: int) -> None:
    if not reasons:
        b.value(QUARANTINE_CHECK, 0.0, f"no row quarantined of {rows_read}")
    for reason, n in sorted(reasons.items()):
        b.value(f"{QUARANTINE_CHECK}:{reason}", n / rows_read if rows_read else 1.0,
                f"{n} of {rows_read} rows read")


def _freshness(b: _Builder, current: Profile, now: float) -> None:
    if current.newest_ts is None:
        b.skip("freshness_hours", "no valid event at all")
        b.skip("input_age_at_run_hours", "no valid event at all")
        return
    newest = dt.datetime.fromtimestamp(current.newest_ts, dt.UTC).isoformat()
    b.value("freshness_hours", (current.run_end - current.newest_ts) / 3600,
            f"newest event {newest}, run date ends {current.run_date} 24:00 UTC")
    b.value("input_age_at_run_hours", (now - current.newest_ts) / 3600,
            f"newest event {newest}, run started "
            f"{dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec='seconds')}")
