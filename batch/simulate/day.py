"""One simulated day: users ask for their row, react to it, and the events are posted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from batch.simulate.behaviour import BehaviourModel
from batch.simulate.client import ServiceClient
from batch.simulate.truth import GroundTruth

EVENTS_PER_POST = 500  # well under the endpoint's 1000-event limit


@dataclass
class DayStats:
    day: int
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    plays: int = 0
    completes: int = 0
    dislikes: int = 0
    # Sum over shown items of the true click probability: what a row is worth to its users,
    # free of the noise of the draws (the same row always has the same expected value).
    expected_clicks: float = 0.0
    events_posted: int = 0
    bundles: Counter[str] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    played_items: list[tuple[str, str]] = field(default_factory=list)  # (user_id, item_id)
    disliked_items: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def play_rate(self) -> float:
        return self.plays / self.impressions if self.impressions else 0.0

    @property
    def expected_ctr(self) -> float:
        return self.expected_clicks / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict[str, Any]:
        # Not asdict(): it rebuilds a Counter from (key, value) pairs, counting the pairs.
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("played_items", "disliked_items")}
        out |= {"bundles": dict(self.bundles), "served_by": dict(self.served_by)}
        out |= {"ctr": round(self.ctr, 5), "play_rate": round(self.play_rate, 5),
                "expected_ctr": round(self.expected_ctr, 5)}  # fmt: skip
        return out


def simulate_day(
    client: ServiceClient,
    truth: GroundTruth,
    model: BehaviourModel,
    users: list[str],
    day: int,
    rng: np.random.Generator,
    k: int = 10,
) -> DayStats:
    stats = DayStats(day)
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            stats.events_posted += int(client.post_events(pending).get("accepted", len(pending)))
            pending.clear()

    for user in users:
        answer = client.recommend(user, k)
        items = [row["item_id"] for row in answer["items"]]
        stats.requests += 1
        stats.bundles[answer["bundle"]] += 1
        stats.served_by[answer["served_by"]] += 1
        if not items:
            continue
        relevance = truth.relevance(user, items)
        stats.expected_clicks += float(model.click_probability(relevance).sum())
        reaction = model.react(relevance, rng)
        request_id = answer["request_id"]
        for pos, item in enumerate(items):
            kinds = ["impression"]
            kinds += ["click"] * bool(reaction.clicked[pos])
            kinds += ["play"] * bool(reaction.played[pos])
            kinds += ["complete"] * bool(reaction.completed[pos])
            kinds += ["dislike"] * bool(reaction.disliked[pos])
            for kind in kinds:
                pending.append({"event_id": f"sim-{request_id}-{pos}-{kind}", "type": kind,
                                "user_id": user, "item_id": item, "request_id": request_id})  # fmt: skip
        stats.impressions += len(items)
        stats.clicks += int(reaction.clicked.sum())
        stats.plays += int(reaction.played.sum())
        stats.completes += int(reaction.completed.sum())
        stats.dislikes += int(reaction.disliked.sum())
        stats.played_items += [(user, items[p]) for p in np.flatnonzero(reaction.played)]
        stats.disliked_items += [(user, items[p]) for p in np.flatnonzero(reaction.disliked)]
        if len(pending) >= EVENTS_PER_POST:
            flush()
    flush()
    return stats
