"""Quality gate decisions."""

from __future__ import annotations

from batch.stages.gate import decide
from shared.config import PublishConfig


def _metrics(merged: float, popularity: float) -> dict[str, object]:
    return {"lists": {"merged": {"ndcg@10": merged}, "popularity": {"ndcg@10": popularity}}}


def test_passes_when_better_than_baseline_and_previous() -> None:
    decision = decide(_metrics(0.30, 0.10), _metrics(0.29, 0.10), PublishConfig())
    assert decision.passed and decision.reasons == []


def test_refuses_below_popularity() -> None:
    decision = decide(_metrics(0.09, 0.10), None, PublishConfig())
    assert not decision.passed
    assert "popularity baseline" in decision.reasons[0]


def test_refuses_sharp_drop_from_last_run() -> None:
    decision = decide(_metrics(0.20, 0.10), _metrics(0.30, 0.10), PublishConfig(max_relative_drop=0.2))
    assert not decision.passed
    assert "dropped from 0.3000" in decision.reasons[0]


def test_small_drop_is_tolerated() -> None:
    assert decide(_metrics(0.27, 0.10), _metrics(0.30, 0.10), PublishConfig()).passed


def test_absolute_floor() -> None:
    decision = decide(_metrics(0.2, 0.1), None, PublishConfig(min_value=0.5))
    assert not decision.passed and "floor" in decision.reasons[0]
