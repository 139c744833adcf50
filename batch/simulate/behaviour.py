"""How a simulated user reacts to a row: a position-biased click model over true relevance.

P(click at position p) = examination(p) * (floor + (ceiling - floor) * relevance^sharpness),
with examination(p) = 1 / log2(p + 1) (the DCG discount: people look at the top). A click is
followed by a play with a probability growing with relevance, a play by a completion likewise;
a shown item the user barely likes is disliked now and then. All draws come from the caller's
seeded Generator, so a simulation replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BehaviourModel:
    click_floor: float = 0.01  # an item the user does not like at all, at position 1
    click_ceiling: float = 0.30  # an item of the user's favourite genre, at position 1
    sharpness: float = 2.0  # > 1: only real favourites get clicked much
    play_given_click: tuple[float, float] = (0.3, 0.9)  # at relevance 0 and 1
    complete_given_play: tuple[float, float] = (0.2, 0.8)
    dislike_below: float = 0.1  # relevance under which an item may be disliked
    dislike_rate: float = 0.03

    def click_probability(self, relevance: np.ndarray) -> np.ndarray:
        positions = np.arange(1, len(relevance) + 1)
        examination = 1.0 / np.log2(positions + 1.0)
        appeal = self.click_floor + (self.click_ceiling - self.click_floor) * (
            np.clip(relevance, 0.0, 1.0) ** self.sharpness
        )
        return examination * appeal

    def react(self, relevance: np.ndarray, rng: np.random.Generator) -> Reaction:
        """One user's reaction to one row (relevance in display order)."""
        n = len(relevance)
        clicked = rng.random(n) < self.click_probability(relevance)
        lo, hi = self.play_given_click
        played = clicked & (rng.random(n) < lo + (hi - lo) * relevance)
        lo, hi = self.complete_given_play
        completed = played & (rng.random(n) < lo + (hi - lo) * relevance)
        disliked = ~clicked & (relevance < self.dislike_below) & (rng.random(n) < self.dislike_rate)
        return Reaction(clicked, played, completed, disliked)


@dataclass(frozen=True)
class Reaction:
    clicked: np.ndarray  # bool per shown position
    played: np.ndarray
    completed: np.ndarray
    disliked: np.ndarray
