"""N simulated days against a real service, with a real nightly run between them."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from batch.data.generate import GenerateConfig, generate
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.day import DayStats, simulate_day
from batch.simulate.outcomes import outcomes_by_bundle
from batch.simulate.processes import run_nightly, service
from batch.simulate.truth import GroundTruth

Policy = Literal["default", "popular"]


@dataclass(frozen=True)
class SimConfig:
    work_dir: Path
    users: int = 1500
    items: int = 800
    events: int = 40_000
    seed: int = 11
    days: int = 3
    users_per_day: int = 400
    k: int = 10
    port: int = 18_550
    policies: tuple[Policy, ...] = ("default", "popular")
    pipeline_config: Path | None = None  # a `recsys batch run --config` file, e.g. a switch
    start: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())

    def data_config(self) -> GenerateConfig:
        # History ends the day before the first night, so the run date follows the data.
        return GenerateConfig(self.work_dir / "data", self.users, self.items, self.events,
                              self.seed, end_date=self.start - dt.timedelta(days=1), days=90)  # fmt: skip


@dataclass
class PolicyResult:
    policy: str
    days: list[DayStats]
    warehouse: dict[str, dict[str, Any]]  # outcomes_by_bundle rows, by bundle
    night_seconds: list[float]

    def rows(self) -> list[dict[str, Any]]:
        """One row per day: our counts beside the warehouse's for the bundle that served it."""
        out = []
        for day in self.days:
            bundle = day.bundles.most_common(1)[0][0] if day.bundles else None
            wh = self.warehouse.get(bundle or "", {})
            out.append(day.as_dict() | {"policy": self.policy, "bundle": bundle,
                                        "warehouse_exposures": wh.get("exposures"),
                                        "warehouse_ctr": _float(wh.get("ctr")),
                                        "warehouse_play_rate": _float(wh.get("play_rate"))})  # fmt: skip
        return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def progress(message: str) -> None:
    print(f"[simulate {dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


def run_policy(cfg: SimConfig, policy: Policy, truth: GroundTruth,
               model: BehaviourModel) -> PolicyResult:  # fmt: skip
    """Night 0, then for each day: serve and react, stop (logs flushed), run the night."""
    root = cfg.work_dir / policy
    shutil.rmtree(root, ignore_errors=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True)
    logs = root / "logs"
    logs.mkdir()
    data = cfg.work_dir / "data"
    rng = np.random.default_rng([cfg.seed, 1 if policy == "default" else 2])
    nights = [run_nightly(data, artifacts, cfg.start, cfg.pipeline_config, logs / "nightly.log")]
    progress(f"{policy}: night 0 published in {nights[0]:.0f} s")
    days = []
    for day in range(1, cfg.days + 1):
        # Known users only: a new user has no hidden taste, so nothing true to react with.
        users = list(rng.choice(truth.user_ids, size=min(cfg.users_per_day, len(truth.user_ids)),
                                replace=False))  # fmt: skip
        started = time.monotonic()
        with service(artifacts, cfg.port, logs / "serve.log", popular_only=policy == "popular") as client:
            stats = simulate_day(client, truth, model, users, day, rng, cfg.k)
        days.append(stats)
        progress(f"{policy}: day {day}: {stats.requests} requests, {stats.events_posted} events, "
                 f"CTR {stats.ctr:.4f} (expected {stats.expected_ctr:.4f}), "
                 f"play rate {stats.play_rate:.4f} in {time.monotonic() - started:.0f} s")  # fmt: skip
        nights.append(run_nightly(data, artifacts, cfg.start + dt.timedelta(days=day),
                                  cfg.pipeline_config, logs / "nightly.log"))  # fmt: skip
        progress(f"{policy}: night {day} published in {nights[-1]:.0f} s")
    return PolicyResult(policy, days, outcomes_by_bundle(artifacts), nights)


def run_simulation(cfg: SimConfig, model: BehaviourModel | None = None) -> list[PolicyResult]:
    model = model or BehaviourModel()
    data_cfg = cfg.data_config()
    # A world generated for other settings (an earlier run in the same --work-dir) would
    # not match the truth drawn from these: regenerate unless the recorded settings agree.
    stamp = data_cfg.out_dir / "simulate-world.json"
    wanted = json.dumps({k: str(v) for k, v in data_cfg.__dict__.items()}, sort_keys=True)
    if not (data_cfg.out_dir / "interactions.parquet").exists() or not stamp.exists() \
            or stamp.read_text() != wanted:
        shutil.rmtree(data_cfg.out_dir, ignore_errors=True)
        generate(data_cfg)
        stamp.write_text(wanted)
    truth = GroundTruth.from_config(data_cfg)
    progress(f"{cfg.users} users, {cfg.items} items, {cfg.events} base events; "
             f"{cfg.days} days x {cfg.users_per_day} users, policies {', '.join(cfg.policies)}")  # fmt: skip
    return [run_policy(cfg, policy, truth, model) for policy in cfg.policies]


def write_report(results: list[PolicyResult], cfg: SimConfig, out: Path) -> Path:
    """JSON of every day of every policy, and a PNG of CTR per day beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [row for result in results for row in result.rows()]
    payload = {
        "config": {k: str(v) for k, v in cfg.__dict__.items()},
        "days": rows,
        "night_seconds": {r.policy: [round(s, 1) for s in r.night_seconds] for r in results},
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    _chart(rows, out.with_suffix(".png"))
    return out


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for policy in sorted({r["policy"] for r in rows}):
        mine = [r for r in rows if r["policy"] == policy]
        days = [r["day"] for r in mine]
        axes[0].plot(days, [r["warehouse_ctr"] or r["ctr"] for r in mine], marker="o", label=f"{policy} (warehouse)")
        axes[0].plot(days, [r["expected_ctr"] for r in mine], ls="--", label=f"{policy} (expected)")
        axes[1].plot(days, [r["warehouse_play_rate"] or r["play_rate"] for r in mine], marker="o", label=policy)
    axes[0].set(title="click-through rate per simulated day", xlabel="day", ylabel="CTR")
    axes[1].set(title="play rate per simulated day", xlabel="day", ylabel="plays / exposure")
    for ax in axes:
        ax.set_xticks(sorted({r["day"] for r in rows}))  # whole simulated days
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
