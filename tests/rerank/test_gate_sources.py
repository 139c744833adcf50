"""The gate compares the published (re-ranked) lists with the best single source."""

from __future__ import annotations

from batch.stages.gate import decide
from shared.config import PublishConfig


def _metrics(merged: float, ann: float, cooc: float) -> dict[str, object]:
    lists = {"merged": merged, "popularity": 0.05, "ann": ann, "cooc": cooc, "popular": 0.05}
    return {"lists": {name: {"ndcg@10": v} for name, v in lists.items()}}


def test_refuses_lists_below_the_best_single_source() -> None:
    decision = decide(_metrics(0.15, 0.12, 0.16), None, PublishConfig())
    assert not decision.passed
    assert "best single source (cooc, 0.1600)" in decision.reasons[0]
    assert decision.checked["best_source"] == 0.16


def test_tolerance_and_pass() -> None:
    assert decide(_metrics(0.18, 0.12, 0.16), None, PublishConfig()).passed
    assert decide(_metrics(0.15, 0.12, 0.16), None, PublishConfig(max_drop_vs_best_source=0.1)).passed


def test_lists_take_the_fused_order_when_the_reranked_one_is_worse() -> None:
    from batch.ranker.rerank import choose_order

    assert choose_order({"ndcg@10": 0.30}, {"ndcg@10": 0.31})[0] == "fused"
    assert choose_order({"ndcg@10": 0.31}, {"ndcg@10": 0.31})[0] == "reranked"  # a tie
    order, why = choose_order({"ndcg@10": 0.33}, {"ndcg@10": 0.31})
    assert order == "reranked" and "0.3300 >= fused 0.3100" in why
    assert choose_order({"ndcg@10": 0.1}, None)[0] == "reranked"
