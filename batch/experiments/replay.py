"""Offline replay of the traffic simulator's click model, to prove the experiment statistics.

NOT traffic through the service: no bundle, no server, no warehouse. The world is the
simulator's own (the generator's users, items and hidden tastes, batch/simulate/truth.py),
each policy is a fixed list per user, and reactions follow the simulator's BehaviourModel
(its click probability by position and relevance, its play-given-click probability). Per
seed, visiting users are split into two arms by hashing their id with the seed as salt, and
their per-user sums go through stats.analyse, as the warehouse report's would.

Vectorised: a user's clicks over r visits at one position are Binomial(r, p_click) and the
plays Binomial(clicks, p_play | click): the same distribution as r calls of
BehaviourModel.react (tests/unit/test_experiment_replay.py checks it against react).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from batch.data.generate import SECONDARY_GENRE_WEIGHT, GenerateConfig, build_catalog, user_activity
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.truth import GroundTruth

ARMS = ("A", "B")
SHARES = {"A": 0.5, "B": 0.5}


@dataclass(frozen=True)
class ReplayConfig:
    users: int = 20_000
    items: int = 800
    events_per_user: int = 27  # the simulator's default world: 40k events over 1.5k users
    world_seed: int = 11
    k: int = 10
    mean_visits: float = 3.0  # visits per user in one experiment period, on average
    max_visits: float = 30.0  # cap on a heavy user's expected visits
    # sd of the Gaussian noise on true relevance in the personalised policy: at 4.5 its lists
    # are worth 1.35x the popular list in true CTR, as the real product's rows were worth 1.34x
    # in the simulator run of docs/simulator.md (at sd 0.5 they are worth 5.9x: nothing to test).
    noise: float = 4.5
    model: BehaviourModel = field(default_factory=BehaviourModel)

    def generate_config(self) -> GenerateConfig:
        # Nothing is written: the truth is rebuilt from the generator's random streams.
        return GenerateConfig(Path("/nonexistent"), self.users, self.items,
                              self.users * self.events_per_user, self.world_seed)  # fmt: skip


@dataclass(frozen=True)
class Policy:
    name: str
    lists: np.ndarray  # (users, k) item rows, in display order
    p_click: np.ndarray  # (users, k) BehaviourModel.click_probability of each list
    p_play: np.ndarray  # (users, k) P(play | click)


@dataclass(frozen=True)
class World:
    config: ReplayConfig
    user_ids: list[str]
    visit_rate: np.ndarray  # expected visits per user in one period (Poisson mean)
    policies: dict[str, Policy]

    def true_rate(self, policy: str, metric: str) -> float:
        """The population value of a metric under a policy, free of any draw: visit-weighted
        expected clicks (or plays) over expected exposures."""
        p = self.policies[policy]
        per_visit = p.p_click if metric == "ctr" else p.p_click * p.p_play
        return float((self.visit_rate * per_visit.sum(axis=1)).sum()
                     / (self.visit_rate.sum() * self.config.k))  # fmt: skip


def relevance_rows(truth: GroundTruth, rows: slice) -> np.ndarray:
    """GroundTruth.relevance for every item at once, for a block of users."""
    taste = truth.tastes[rows]
    top = taste.max(axis=1, keepdims=True)
    top = np.where(top > 0, top, 1.0)
    out = np.zeros((taste.shape[0], truth.item_genres.shape[0]))
    for slot, weight in enumerate((1.0, SECONDARY_GENRE_WEIGHT, SECONDARY_GENRE_WEIGHT)):
        genre = truth.item_genres[:, slot]
        valid = genre >= 0
        contribution = np.where(valid[None, :], taste[:, np.where(valid, genre, 0)] * weight, 0.0)
        out = np.maximum(out, contribution)
    return out / top


def _policy(name: str, lists: np.ndarray, relevance: np.ndarray, model: BehaviourModel) -> Policy:
    # One call of the simulator's own model per user: its probabilities, not a copy of them.
    p_click = np.stack([model.click_probability(row) for row in relevance])
    lo, hi = model.play_given_click
    return Policy(name, lists, p_click, lo + (hi - lo) * relevance)


def build_world(cfg: ReplayConfig) -> World:
    """The simulator's world and two list policies: `personalised` (true relevance plus
    Gaussian noise, top k: a good but imperfect recommender) and `popular` (everyone gets
    the k most popular items of the generator's Zipf popularity, like RECSYS_POPULAR_ONLY)."""
    gen = cfg.generate_config()
    truth = GroundTruth.from_config(gen)
    catalogue = build_catalog(gen)
    popularity = np.diff(catalogue.popularity_cdf, prepend=0.0)
    popular = np.argsort(-popularity, kind="stable")[: cfg.k]
    rng = np.random.default_rng([cfg.world_seed, 99])
    n = len(truth.user_ids)
    personal = np.zeros((n, cfg.k), dtype=np.int64)
    rel_personal, rel_popular = np.zeros((n, cfg.k)), np.zeros((n, cfg.k))
    for lo in range(0, n, 2000):
        block = slice(lo, min(lo + 2000, n))
        rel = relevance_rows(truth, block)
        score = rel + cfg.noise * rng.standard_normal(rel.shape)
        top = np.argpartition(-score, cfg.k, axis=1)[:, : cfg.k]
        order = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1)
        personal[block] = np.take_along_axis(top, order, axis=1)
        rel_personal[block] = np.take_along_axis(rel, personal[block], axis=1)
        rel_popular[block] = rel[:, popular]
    counts, _ = user_activity(gen)  # history events per user: heavy users visit more
    rate = np.minimum(cfg.mean_visits * counts / counts.mean(), cfg.max_visits)
    policies = {
        "personalised": _policy("personalised", personal, rel_personal, cfg.model),
        "popular": _policy("popular", np.tile(popular, (n, 1)), rel_popular, cfg.model),
    }
    return World(cfg, truth.user_ids, rate, policies)


def hash_arm_b(user_ids: list[str], salt: int, share_a: float = SHARES["A"]) -> np.ndarray:
    """True where a user is in arm B: a keyed hash of the id, uniform in [0, 1), against the
    share (the salt makes each experiment's split independent of the others')."""
    key = str(salt).encode()
    u = np.array([int.from_bytes(hashlib.blake2b(x.encode(), digest_size=8, key=key).digest(), "big")
                  for x in user_ids], dtype=np.float64) / 2.0**64  # fmt: skip
    return u >= share_a


def draw_reactions(policy: Policy, users: np.ndarray, visits: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per-user clicks and plays over `visits` rows each (see the module docstring)."""
    clicks = rng.binomial(visits[:, None], policy.p_click[users])
    plays = rng.binomial(clicks, policy.p_play[users])
    return clicks.sum(axis=1), plays.sum(axis=1)


def run_seed(world: World, policy_a: str, policy_b: str, seed: int,
             n_users: int | None = None) -> pd.DataFrame:  # fmt: skip
    """One experiment: who visits (Poisson by activity), optionally a random `n_users` of
    them, a hashed split with salt = seed, reactions per arm's policy; one row per user."""
    rng = np.random.default_rng([seed, 7])
    visits = rng.poisson(world.visit_rate)
    users = np.flatnonzero(visits > 0)
    if n_users is not None:
        if n_users > len(users):
            raise ValueError(f"{n_users} users asked for, only {len(users)} visit: grow the world")
        users = np.sort(rng.choice(users, size=n_users, replace=False))
    in_b = hash_arm_b([world.user_ids[u] for u in users], salt=seed)
    clicks = np.zeros(len(users), dtype=np.int64)
    plays = np.zeros(len(users), dtype=np.int64)
    for arm_mask, policy in ((~in_b, policy_a), (in_b, policy_b)):
        c, p = draw_reactions(world.policies[policy], users[arm_mask], visits[users[arm_mask]], rng)
        clicks[arm_mask], plays[arm_mask] = c, p
    return pd.DataFrame({"user": users, "arm": np.where(in_b, "B", "A"),
                         "exposures": visits[users] * world.config.k,
                         "clicks": clicks, "plays": plays})  # fmt: skip


def binomial_interval(successes: int, trials: int) -> list[float]:
    """Clopper-Pearson 95% interval of a share."""
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(0.95)
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def ceil(x: float) -> int:
    return int(math.ceil(x))
