"""The simulator's ground truth is the generator's, and its users behave as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from batch.data.generate import GenerateConfig, generate
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.truth import GroundTruth


def test_hidden_tastes_are_the_ones_the_history_was_drawn_from(tmp_path: Path) -> None:
    cfg = GenerateConfig(tmp_path, n_users=300, n_items=400, n_events=30_000, seed=5)
    generate(cfg)
    truth = GroundTruth.from_config(cfg)
    assert truth.tastes.shape[0] == 300
    np.testing.assert_allclose(truth.tastes.sum(axis=1), 1.0, atol=1e-9)
    events = pq.read_table(tmp_path / "interactions.parquet").to_pandas()
    # Mean true relevance of what users actually did, against the same users paired with
    # items drawn at random: the history must lean hard towards the hidden tastes.
    rng = np.random.default_rng(0)
    sample = events.sample(3000, random_state=0)
    done = np.mean([truth.relevance(u, [i])[0] for u, i in zip(sample.user_id, sample.item_id, strict=True)])
    random_items = rng.choice(truth.item_ids, size=len(sample))
    chance = np.mean([truth.relevance(u, [i])[0] for u, i in zip(sample.user_id, random_items, strict=True)])
    assert done > 1.8 * chance, (done, chance)
    # A second reconstruction is identical: the truth is deterministic.
    np.testing.assert_array_equal(GroundTruth.from_config(cfg).tastes, truth.tastes)


def test_unknown_users_and_items_have_no_relevance(tmp_path: Path) -> None:
    cfg = GenerateConfig(tmp_path, n_users=20, n_items=300, n_events=500, seed=1)
    truth = GroundTruth.from_config(cfg)
    assert truth.relevance("nobody", truth.item_ids[:3]).tolist() == [0.0, 0.0, 0.0]
    assert truth.relevance(truth.user_ids[0], ["no-such-item"]).tolist() == [0.0]
    rel = truth.relevance(truth.user_ids[0], truth.item_ids)
    assert 0.0 <= rel.min() and rel.max() <= 1.0
    assert np.isclose(rel.max(), 1.0) or rel.max() >= 0.4  # favourite genre, maybe as 2nd genre


def test_clicks_fall_with_position_and_rise_with_relevance() -> None:
    model = BehaviourModel()
    p = model.click_probability(np.full(10, 0.8))
    assert np.all(np.diff(p) < 0)
    assert model.click_probability(np.array([1.0]))[0] == model.click_ceiling
    assert model.click_probability(np.array([0.0]))[0] == model.click_floor
    assert model.click_probability(np.array([0.9]))[0] > model.click_probability(np.array([0.3]))[0]


def test_reactions_follow_the_probabilities_and_replay_with_the_seed() -> None:
    model = BehaviourModel()
    relevance = np.full(10, 1.0)
    draws = [model.react(relevance, np.random.default_rng(s)) for s in range(4000)]
    clicks = np.mean([d.clicked for d in draws], axis=0)
    np.testing.assert_allclose(clicks, model.click_probability(relevance), atol=0.02)
    plays = sum(d.played.sum() for d in draws) / sum(d.clicked.sum() for d in draws)
    assert abs(plays - model.play_given_click[1]) < 0.03
    assert all(not (d.played & ~d.clicked).any() for d in draws)  # no play without a click
    assert all(not (d.completed & ~d.played).any() for d in draws)
    a, b = model.react(relevance, np.random.default_rng(7)), model.react(relevance, np.random.default_rng(7))
    assert (a.clicked == b.clicked).all() and (a.played == b.played).all()
    low = [model.react(np.zeros(10), np.random.default_rng(s)).disliked.mean() for s in range(2000)]
    assert 0.01 < float(np.mean(low)) < 0.05  # ~dislike_rate for items the user does not like


def test_a_day_serialises_with_its_bundle_and_served_by_counts() -> None:
    """The report once failed at its very end: asdict() turned the Counters into tuple keys."""
    import json

    from batch.simulate.day import DayStats

    day = DayStats(1, requests=3, impressions=30, clicks=2)
    day.bundles["run-a"] += 3
    day.served_by["reranked"] += 2
    day.played_items.append(("u1", "i1"))
    got = json.loads(json.dumps(day.as_dict()))
    assert got["bundles"] == {"run-a": 3} and got["served_by"] == {"reranked": 2}
    assert got["ctr"] == round(2 / 30, 5) and "played_items" not in got
