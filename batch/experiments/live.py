"""Experiments proved on live traffic: the traffic simulator's users (ground-truth tastes,
the BehaviourModel's reactions) against a real `recsys serve`, with a real nightly bundle,
the served and event logs, the warehouse rebuild and the report's own code.

Three phases on one world, one published night, each phase one simulated day:

1. **A/A**: experiment `aa`, two arms with the same (empty) treatment, 50/50. The live
   assignment is analysed as served, then the same logged per-user outcomes are split again
   by `resplits` independent salts: with identical treatments every split of the users is
   an A/A test, so the share of splits with p < 0.05 must be about 5 % and the SRM check must
   stay silent (re-randomisation on the real traffic, not a replay of a model).
2. **A/B**: experiment `ab`, control against a bundle that verifies (checksums, shapes, smoke
   query) but serves poor lists: the run with its item ids shuffled among its items, as a
   broken join in the catalogue export would publish. The live effect is measured; the power calculation
   (both arms' per-user sds) gives the users per arm for it; `resamples` random subsets of
   that many users per arm of the logged traffic are analysed, and the share detected
   (p < 0.05, the right sign) must be at least 80 %.
3. **Canary**: `recsys rollout start` of the same broken run at 50 %, a day of traffic, and
   `recsys rollout check` while the server keeps serving: the guardrails roll it back, the
   workers drop the canary at their next poll, and no request fails at any point.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch.experiments.report import experiment_report, per_user_table
from batch.experiments.stats import RatioEstimate, analyse, ratio_estimate, sample_size_per_arm
from batch.publish.release import rebuild_warehouse
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.client import ServiceClient, ServiceError
from batch.simulate.day import DayStats, simulate_day
from batch.simulate.loop import SimConfig, progress
from batch.simulate.processes import run_nightly
from batch.simulate.truth import GroundTruth
from shared import bundle_layout as layout
from shared import experiments as exp
from shared.bundle import checksum_tree, load_manifest, read_current, run_dir
from shared.service_process import recsys_command, running_service
from shared.warehouse import connect_analyst

ALPHA = 0.05


@dataclass(frozen=True)
class LiveConfig:
    sim: SimConfig
    resplits: int = 200  # A/A re-randomisations of the logged traffic
    resamples: int = 200  # A/B subsets at the power calculation's size
    power: float = 0.8


def _remap_ids(path: Path, column: str, by_idx: dict[int, str], idx_column: str) -> None:
    table = pq.read_table(path)
    field = table.schema.field(column)
    ids = pa.array([by_idx[i] for i in table.column(idx_column).to_pylist()], type=field.type)
    pq.write_table(table.set_column(table.schema.get_field_index(column), field, ids), path)


def degrade_bundle(artifacts: Path, source_run: str, run_id: str, seed: int = 5) -> Path:
    """A copy of `source_run` whose catalogue maps every item id to another item's row (a
    derangement: a broken join in the catalogue export), re-signed. It verifies (checksums,
    shapes, ids in the catalogue, the smoke query) and serves, but every list it ranks is
    made of other items than the model chose: poor lists from a healthy-looking bundle."""
    source, target = run_dir(artifacts, source_run), run_dir(artifacts, run_id)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    items = pq.read_table(target / layout.ITEMS, columns=["item_idx", "item_id"]).to_pydict()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items["item_id"]))
    # Each item takes the id of the next one in a random cycle: no item keeps its own.
    moved = {int(order[k]): items["item_id"][order[(k + 1) % len(order)]] for k in range(len(order))}
    by_idx = {int(i): moved[k] for k, i in enumerate(items["item_idx"])}
    for name in (layout.ITEMS, layout.RECOMMENDATIONS, layout.POPULAR):
        _remap_ids(target / name, "item_id", by_idx, "item_idx")
    manifest = load_manifest(target).model_copy(update={"run_id": run_id})
    (target / layout.MANIFEST).write_text(manifest.model_dump_json(indent=2))
    manifest = manifest.model_copy(update={"files": checksum_tree(target)})
    (target / layout.MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return target


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*recsys_command(), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"recsys {' '.join(args)} failed (rc {done.returncode}): {done.stderr[-2000:]}")
    return done


def _declare(artifacts: Path, work: Path, name: str, arms: list[dict[str, Any]]) -> None:
    """Install `name` as the only running experiment (through the audited CLI)."""
    spec = work / f"{name}.json"
    spec.write_text(json.dumps({"version": 0, "experiments": [
        {"name": name, "layer": "live-proof", "salt": f"live-{name}", "status": "running", "arms": arms}]}))  # fmt: skip
    _cli("experiment", "set", str(spec), "--artifacts", str(artifacts))


def _serve_day(cfg: LiveConfig, artifacts: Path, logs: Path, truth: GroundTruth,
               model: BehaviourModel, day: int, during: Callable[[ServiceClient], Any] | None = None,
               ) -> tuple[DayStats, Any]:  # fmt: skip
    """Every user of the world once, through a real server (2 workers, 1 s reload poll);
    `during(client)` runs after the traffic while the server still serves."""
    rng = np.random.default_rng([cfg.sim.seed, 40 + day])
    users = list(truth.user_ids)
    env = {"RECSYS_RELOAD_POLL_SECONDS": "1", "RECSYS_REQUEST_LOG_ROTATE_SECONDS": "2"}
    with running_service(artifacts, logs / "serve.log", port=cfg.sim.port, workers=2, env=env,
                         append_log=True) as running:  # fmt: skip
        client = ServiceClient(running.base_url)
        stats = simulate_day(client, truth, model, users, day, rng, cfg.sim.k)
        extra = during(client) if during is not None else None
    return stats, extra


def _per_user(artifacts: Path, name: str) -> pd.DataFrame:
    con = connect_analyst(artifacts)
    try:
        return per_user_table(con, name, "user_key")
    finally:
        con.close()


def _report(artifacts: Path, name: str, shares: dict[str, float]) -> dict[str, Any]:
    con = connect_analyst(artifacts)
    try:
        return experiment_report(con, name, shares).to_dict()
    finally:
        con.close()


def _split(users: pd.Series, salt: int) -> np.ndarray:
    key = str(salt).encode()
    u = np.array([int.from_bytes(hashlib.blake2b(str(x).encode(), digest_size=8, key=key).digest(), "big")
                  for x in users], dtype=np.float64) / 2.0**64  # fmt: skip
    return np.where(u < 0.5, "a", "b")


def aa_resplits(per_user: pd.DataFrame, n: int) -> dict[str, Any]:
    """The logged A/A users split again by n salts: share of p < ALPHA and SRM alarms."""
    table = per_user.drop(columns="arm")
    p_ctr, p_play, srm = [], [], 0
    for salt in range(n):
        result = analyse(table.assign(arm=_split(table["user"], salt)), {"a": 1, "b": 1}, "a")
        vs = result.arm("b").vs_control or {}
        p_ctr.append(vs["ctr"].p_value)
        p_play.append(vs["play_rate"].p_value)
        srm += result.srm.flagged
    from scipy.stats import kstest

    from batch.experiments.replay import binomial_interval

    hits = int(np.sum(np.array(p_ctr) < ALPHA))
    return {"splits": n, "users": len(table), "ctr_p_below_alpha": hits / n,
            "ctr_ci95": binomial_interval(hits, n),
            "play_rate_p_below_alpha": float(np.mean(np.array(p_play) < ALPHA)),
            "ks_p_uniform": round(float(kstest(p_ctr, "uniform").pvalue), 4),
            "srm_flagged": srm}  # fmt: skip


def _estimate(group: pd.DataFrame) -> RatioEstimate:
    return ratio_estimate(group["clicks"].to_numpy(), group["exposures"].to_numpy())


def ab_power(per_user: pd.DataFrame, treatment: str, n_resamples: int, power: float,
             seed: int = 3) -> dict[str, Any]:
    """Users per arm the power calculation asks for at the observed CTR effect, and the share
    of random subsets of that size per arm (of the logged traffic) that detect it."""
    control = per_user[per_user["arm"] == "control"]
    treated = per_user[per_user["arm"] == treatment]
    c, t = _estimate(control), _estimate(treated)
    lift = t.value / c.value - 1
    n = int(np.ceil(sample_size_per_arm(c, lift, power, ALPHA, 1.0, treatment=t)))
    out: dict[str, Any] = {"observed_lift": round(lift, 4), "users_per_arm_needed": n,
                           "users_available": {"control": len(control), treatment: len(treated)}}  # fmt: skip
    if n > min(len(control), len(treated)):
        out["detected_share"] = None
        out["note"] = "more users needed than the day had: grow the world"
        return out
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_resamples):
        sample = pd.concat([control.iloc[rng.choice(len(control), n, replace=False)],
                            treated.iloc[rng.choice(len(treated), n, replace=False)]])  # fmt: skip
        result = analyse(sample, {"control": 1, treatment: 1}, "control")
        vs = (result.arm(treatment).vs_control or {})["ctr"]
        hits += vs.p_value < ALPHA and np.sign(vs.lift) == np.sign(lift)
    from batch.experiments.replay import binomial_interval

    out |= {"resamples": n_resamples, "detected_share": hits / n_resamples,
            "detected_ci95": binomial_interval(hits, n_resamples)}  # fmt: skip
    return out


def canary_phase(cfg: LiveConfig, artifacts: Path, logs: Path, truth: GroundTruth,
                 model: BehaviourModel, broken: str, rollout_config: Path) -> dict[str, Any]:
    """Start the broken run as a 50 % canary, serve a day, check while serving, then count
    what every worker serves and whether any request failed."""
    _cli("rollout", "start", broken, "--share", "50%", "--artifacts", str(artifacts))

    def check_while_serving(client: ServiceClient) -> dict[str, Any]:
        time.sleep(5)  # the logs rotate every 2 s: this day's traffic reaches Parquet
        done = _cli("rollout", "check", "--artifacts", str(artifacts), "--config",
                    str(rollout_config), "--json")  # fmt: skip
        outcome = json.loads(done.stdout)
        started = time.monotonic()
        failed = sent = 0
        bundles: dict[str, int] = {}
        while time.monotonic() - started < 20:  # workers poll every second
            answers = []
            for user in truth.user_ids[:100]:
                sent += 1
                try:
                    answers.append(client.recommend(user, cfg.sim.k))
                except (ServiceError, OSError):  # a failed request is what is counted
                    failed += 1
            if answers and all(a["bundle"] != broken for a in answers):
                break
        for user in truth.user_ids[:200]:
            sent += 1
            try:
                answer = client.recommend(user, cfg.sim.k)
                bundles[answer["bundle"]] = bundles.get(answer["bundle"], 0) + 1
            except (ServiceError, OSError):
                failed += 1
        return {"outcome": outcome, "seconds_to_drop": round(time.monotonic() - started, 1),
                "after_requests": sent, "after_failed": failed, "after_bundles": bundles}  # fmt: skip

    stats, after = _serve_day(cfg, artifacts, logs, truth, model, 3, check_while_serving)
    outcome = after.pop("outcome")
    return {"day": stats.as_dict(), "action": outcome["action"], "reason": outcome.get("reason"),
            "ctr": outcome.get("values", {}).get("ctr"), **after,
            "current": read_current(artifacts)}  # fmt: skip


def run_live_proof(cfg: LiveConfig) -> dict[str, Any]:
    started = time.monotonic()
    sim = cfg.sim
    from batch.data.generate import generate

    shutil.rmtree(sim.work_dir, ignore_errors=True)
    data_cfg = sim.data_config()
    generate(data_cfg)
    truth = GroundTruth.from_config(data_cfg)
    model = BehaviourModel()
    artifacts, logs = sim.work_dir / "artifacts", sim.work_dir / "logs"
    artifacts.mkdir(parents=True)
    logs.mkdir()
    night = run_nightly(sim.work_dir / "data", artifacts, sim.start, sim.pipeline_config,
                        logs / "nightly.log")  # fmt: skip
    live = read_current(artifacts)
    assert live is not None
    broken = f"{live}-broken"
    degrade_bundle(artifacts, live, broken)
    progress(f"night published {live} in {night:.0f} s; broken copy {broken}")
    out: dict[str, Any] = {"world": {"users": sim.users, "items": sim.items, "events": sim.events,
                                     "seed": sim.seed, "k": sim.k}, "run": live, "broken_run": broken}  # fmt: skip

    _declare(artifacts, sim.work_dir, "aa", [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}])
    day, _ = _serve_day(cfg, artifacts, logs, truth, model, 1)
    rebuild_warehouse(artifacts, live)
    out["aa"] = {"day": day.as_dict(), "report": _report(artifacts, "aa", {"a": 0.5, "b": 0.5}),
                 "resplits": aa_resplits(_per_user(artifacts, "aa"), cfg.resplits)}  # fmt: skip
    progress(f"A/A: {json.dumps(out['aa']['resplits'])}")

    _declare(artifacts, sim.work_dir, "ab", [{"name": "control", "share": 0.5},
                                            {"name": "broken", "share": 0.5, "treatment": {"bundle": broken}}])  # fmt: skip
    day, _ = _serve_day(cfg, artifacts, logs, truth, model, 2)
    rebuild_warehouse(artifacts, live)
    out["ab"] = {"day": day.as_dict(), "report": _report(artifacts, "ab", {"control": 0.5, "broken": 0.5}),
                 "power": ab_power(_per_user(artifacts, "ab"), "broken", cfg.resamples, cfg.power)}  # fmt: skip
    progress(f"A/B: {json.dumps(out['ab']['power'])}")

    # The rollout layer's bundle setting would clash with a running experiment's: stop ab.
    exp.write(artifacts, exp.ExperimentsFile.model_validate({"experiments": []}),
              reason="live proof: the canary next")  # fmt: skip
    rollout_config = sim.work_dir / "rollout.json"
    rollout_config.write_text(json.dumps({"rollout": {"min_users": 300, "min_requests": 300,
                                                      "hold_hours": 0, "alpha": 0.01}}))  # fmt: skip
    out["canary"] = canary_phase(cfg, artifacts, logs, truth, model, broken, rollout_config)
    progress(f"canary: {out['canary']['action']}: {out['canary']['reason']}")
    out["seconds"] = round(time.monotonic() - started, 1)
    out["night_seconds"] = round(night, 1)
    out["date"] = dt.date.today().isoformat()
    return out
