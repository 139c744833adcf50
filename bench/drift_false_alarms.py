"""How often each input drift check breaches on normal days (no shift), default thresholds.

Generates a few worlds (batch/data/generate.py, one per seed), each `--history-days` long,
and treats each of its last `--days` days as one nightly run: the run's profile is computed
from the events before the end of its date (batch/drift/profile.build, the function the
`drift` stage runs, here on Arrow tables without Spark), every earlier run is "published"
(the previous run and the trailing window are the days before), and every check is
evaluated (batch/drift/checks.evaluate) with the thresholds of the default config. Then
the two drills on each world's last day, as a check of the power at the same scale: the
largest catalogue section's share doubled, and the day thinned to half its events.

    .venv/bin/python bench/drift_false_alarms.py --seeds 3 --days 30 --out bench/results/drift_false_alarms.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batch.data import drift_drills  # noqa: E402
from batch.data.generate import GenerateConfig, generate  # noqa: E402
from batch.drift import checks, profile  # noqa: E402
from batch.drift.profile import Profile  # noqa: E402
from shared.config import DriftConfig  # noqa: E402

DAY = 86_400


def world(seed: int, args: argparse.Namespace, tmp: Path) -> tuple[pa.Table, pa.Table, dt.date]:
    end = dt.date(2025, 12, 31)
    out = tmp / f"seed{seed}"
    generate(GenerateConfig(out_dir=out, n_users=args.users, n_items=args.items,
                            n_events=args.events_per_day * args.history_days, seed=seed,
                            end_date=end, days=args.history_days, n_regions=3))
    table = pq.read_table(out / "interactions.parquet").rename_columns(
        ["user_id", "item_id", "ts", "event_type", "weight"])
    return table, pq.read_table(out / "items.parquet"), end


def run_profile(table: pa.Table, day: dt.date, cfg: DriftConfig) -> Profile:
    end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    before = table.filter(pc.less(table["ts"], end))
    return profile.build(before, None, f"{day.isoformat()}-bench", day, cfg)


def evaluate(cur: Profile, history: list[Profile], cfg: DriftConfig) -> checks.DriftReport:
    window = history[::-1][: cfg.window_runs]
    return checks.evaluate(cur, window[0] if window else None, window, {}, int(1e6), cfg,
                           now=cur.run_end + 2 * 3600)  # a nightly run two hours after midnight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=30, help="normal runs per seed")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--events-per-day", type=int, default=10_000)
    ap.add_argument("--history-days", type=int, default=90,
                    help="days each world spans; its last --days are the runs evaluated")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    cfg = DriftConfig()
    args.history_days = max(args.history_days, args.days + max(cfg.volume_days, cfg.window_runs) + 1)
    started = time.perf_counter()
    breaches: dict[str, Counter[str]] = defaultdict(Counter)
    values: dict[str, list[float]] = defaultdict(list)
    drills: list[tuple[str, str, float | None, str]] = []
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, args.seeds + 1):
            table, items, end = world(seed, args, Path(tmp))
            first = end - dt.timedelta(days=args.history_days - 1)
            history: list[Profile] = []
            for k in range(args.history_days):
                day = first + dt.timedelta(days=k)
                cur = run_profile(table, day, cfg)
                if k >= args.history_days - args.days:
                    runs += 1
                    for c in evaluate(cur, history, cfg).checks:
                        name = c.check.split(":")[0]
                        breaches[name][c.status] += 1
                        if c.value is not None:
                            values[name].append(c.value)
                if k < args.history_days - 1:
                    history.append(cur)
            section = drift_drills.largest_section(table, items, end)
            shifted = drift_drills.shift_section(table, items, end, section, 2.0, seed)
            thinned = drift_drills.thin_day(table, end, 0.5, seed)
            for drill, data, wanted in (("section share x2", shifted, "item_"),
                                        ("half the events", thinned, "volume_drop")):
                for c in evaluate(run_profile(data, end, cfg), history, cfg).checks:
                    if c.check.startswith(wanted):
                        drills.append((f"seed {seed}: {drill}", c.check, c.value, c.status))
    seconds = time.perf_counter() - started
    lines = ["# Drift checks on normal days: false-alarm rate (default thresholds)\n",
             f"{runs} normal runs ({args.seeds} generated worlds x {args.days} run dates; "
             f"{args.users} users, {args.items} items, ~{args.events_per_day} events/day), "
             f"measured in {seconds:.0f} s.\n",
             "Command: `.venv/bin/python bench/drift_false_alarms.py "
             f"--seeds {args.seeds} --days {args.days} --history-days {args.history_days} --users {args.users} --items "
             f"{args.items} --events-per-day {args.events_per_day}`\n",
             "| check | action | threshold | breaches | breach rate | skipped | median value | max value |",
             "|---|---|---|---|---|---|---|---|"]
    for name, counts in breaches.items():
        rc = cfg.check(name)
        breached = counts["warn"] + counts["fail"]
        vals = sorted(values[name])
        med = f"{vals[len(vals) // 2]:.4g}" if vals else "-"
        top = f"{vals[-1]:.4g}" if vals else "-"
        evaluated = runs - counts["skipped"]
        rate = f"{breached / evaluated:.1%}" if evaluated else "-"
        if rc.action == "off":  # recorded only: count what it would have flagged
            breached = sum(v > rc.threshold for v in vals)
            rate = f"{breached / len(vals):.1%} (off)" if vals else "-"
        lines.append(f"| {name} | {rc.action} | {rc.threshold:g} | {breached} | {rate} | "
                     f"{counts['skipped']} | {med} | {top} |")
    lines += ["", "Drills on each world's last day (same scale, same thresholds):", "",
              "| drill | check | value | status |", "|---|---|---|---|"]
    lines += [f"| {d} | {c} | {v if v is None else f'{v:.4g}'} | {s} |" for d, c, v, s in drills]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
