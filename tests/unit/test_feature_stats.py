"""PSI, bins and summaries of shared/feature_stats.py: the numbers both the batch side and
the service's skew monitor compare."""

from __future__ import annotations

import numpy as np
import pytest

from shared import feature_stats as fs


def test_bin_edges_are_deciles_without_duplicates() -> None:
    assert fs.bin_edges(np.arange(1, 101, dtype=float)) == pytest.approx(
        [10.9, 20.8, 30.7, 40.6, 50.5, 60.4, 70.3, 80.2, 90.1])
    mostly_zero = np.r_[np.zeros(80), np.arange(1, 21)]  # 80 % default: fewer, wider bins
    assert fs.bin_edges(mostly_zero) == pytest.approx([0.0, 0.2, 10.1])
    assert fs.bin_edges(np.array([np.nan, np.inf])) == []


def test_bin_counts_put_edges_in_the_upper_bin_and_missing_values_last() -> None:
    counts = fs.bin_counts(np.array([-1.0, 0.0, 0.5, 1.0, 7.0, np.nan, np.inf]), [0.0, 1.0])
    assert counts.tolist() == [1, 2, 2, 2]  # (-inf,0) [0,1) [1,inf) missing
    assert fs.bin_counts(np.array([]), [0.0]).tolist() == [0, 0, 0]


def test_psi_is_zero_for_equal_shares_and_grows_with_a_shift() -> None:
    ref = np.array([100, 100, 100, 100])
    assert fs.psi(ref * 3, ref) == pytest.approx(0.0, abs=1e-12)
    # q = (0.4, 0.2, 0.2, 0.2) vs p = 0.25 each: 0.15 ln(0.4/0.25) + 3 x (-0.05) ln(0.2/0.25)
    assert fs.psi(np.array([400, 200, 200, 200]), ref, alpha=0.0) == pytest.approx(
        0.15 * np.log(1.6) - 0.15 * np.log(0.8))
    one_sided = fs.psi(np.array([0, 0, 0, 10]), ref)  # bins empty on one side: finite
    assert 1.5 < one_sided < 3.0


def test_summary_of_a_column() -> None:
    values = np.r_[np.zeros(50), np.arange(1, 50, dtype=float), np.nan]
    s = fs.summarize(values, fs.bin_edges(values), default=0.0)
    assert s["rows"] == 100 and s["null_share"] == pytest.approx(0.01)
    assert s["default_share"] == pytest.approx(0.5)
    assert s["p50"] == pytest.approx(0.0) and s["p99"] == pytest.approx(48.02)
    assert s["mean"] == pytest.approx(np.arange(1, 50).sum() / 99)
    assert sum(s["counts"]) == 100 and s["counts"][-1] == 1


def test_a_scaled_feature_has_a_large_psi_against_its_own_stats() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, 2))
    stats = fs.build(train, ["a", "b"], {"a": 0.0, "b": 0.0}, training_scores=train[:, 0])
    live = rng.normal(size=(2_000, 2))
    live[:, 1] *= 3.0
    got = fs.psi_against(stats, fs.TRAINING, live, ["a", "b"], scores=live[:, 0])
    floor = fs.noise_floor(11, 2_000, 20_000)
    assert got["a"] < 2 * floor and got["score"] < 2 * floor  # same distribution: noise only
    assert got["b"] > 0.5  # three times wider: most rows in the outer deciles
    assert set(stats["samples"]) == {fs.TRAINING}
    assert len(stats["edges"]["a"]) == 9
