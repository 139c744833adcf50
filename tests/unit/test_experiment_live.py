"""The pieces of the live experiment proof (batch/experiments/live.py) that need no server:
the broken bundle verifies yet gives every user another's row, the A/A re-randomisation and
the A/B power resampling behave as their statistics say on per-user tables with a known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from batch.experiments.live import aa_resplits, ab_power, degrade_bundle
from shared import bundle_layout as layout
from shared.bundle import load_manifest, read_current, run_dir, verify_bundle
from tests.online.bundle_factory import build_bundle


def test_the_broken_bundle_verifies_and_maps_every_item_to_another_row(tmp_path: Path) -> None:
    build_bundle(tmp_path, "run-a", n_users=50)
    target = degrade_bundle(tmp_path, "run-a", "run-a-broken")
    manifest = verify_bundle(target)  # checksums hold: the service will load it
    assert manifest.run_id == "run-a-broken" and read_current(tmp_path) == "run-a"

    def ids(run: Path, name: str) -> list[tuple[int, str]]:
        table = pq.read_table(run / name, columns=["item_idx", "item_id"]).to_pydict()
        return list(zip(table["item_idx"], table["item_id"], strict=True))

    before = dict(ids(run_dir(tmp_path, "run-a"), layout.ITEMS))
    after = dict(ids(target, layout.ITEMS))
    assert sorted(before.values()) == sorted(after.values())  # the same catalogue of ids
    assert all(before[i] != after[i] for i in before)  # and no row keeps its own
    for name in (layout.RECOMMENDATIONS, layout.POPULAR):  # lists follow the broken ids
        assert all(after[i] == item for i, item in ids(target, name)), name
    assert load_manifest(run_dir(tmp_path, "run-a")).run_id == "run-a"  # source untouched


def _users(n: int, rate: float, arm: str, rng: np.random.Generator, offset: int = 0) -> pd.DataFrame:
    exposures = 10 * rng.integers(1, 4, size=n)
    # Users differ in how much they click (a Beta around `rate`): the user is the unit.
    p = rng.beta(2, 2 * (1 - rate) / rate, size=n)
    clicks = rng.binomial(exposures, p)
    return pd.DataFrame({"user": [f"u{offset + i}" for i in range(n)], "arm": arm,
                         "exposures": exposures, "clicks": clicks,
                         "plays": rng.binomial(clicks, 0.5)})  # fmt: skip


def test_aa_resplits_of_one_treatment_reject_about_alpha_and_never_flag_srm() -> None:
    rng = np.random.default_rng(1)
    table = _users(2000, 0.03, "x", rng)
    out = aa_resplits(table, 200)
    assert out["splits"] == 200 and out["users"] == 2000
    assert 0.01 <= out["ctr_p_below_alpha"] <= 0.10  # 5 % +- binomial noise
    assert out["srm_flagged"] <= 2  # p < 0.001: 0.2 expected by chance in 200 splits
    assert out["ks_p_uniform"] > 0.001


def test_ab_power_detects_a_real_effect_at_the_size_it_asks_for() -> None:
    rng = np.random.default_rng(2)
    table = pd.concat([_users(1500, 0.02, "control", rng), _users(1500, 0.04, "broken", rng, 1500)])
    power = ab_power(table, "broken", 100, 0.8)
    assert power["observed_lift"] == pytest.approx(1.0, abs=0.15)
    assert power["users_per_arm_needed"] < 1500
    assert 0.7 <= power["detected_share"] <= 0.92  # 80 % power, 100 resamples


def test_ab_power_says_when_the_day_was_too_small() -> None:
    rng = np.random.default_rng(3)
    table = pd.concat([_users(60, 0.03, "control", rng), _users(60, 0.028, "broken", rng, 60)])
    power = ab_power(table, "broken", 10, 0.8)
    assert power["detected_share"] is None and "grow the world" in power["note"]
