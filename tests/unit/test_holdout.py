"""The external hold-out harness without Spark: the split, the scoring, the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.evaluation import scoring
from batch.evaluation.split import split_per_user, write_training_dir
from shared.metrics import user_metrics


def _interactions(seed: int = 0, users: int = 40, items: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        n = int(rng.integers(1, 30))
        chosen = rng.choice(items, size=n, replace=False)
        for t, i in enumerate(chosen):
            rows.append((f"u{u}", f"i{i}", 1_000_000 + 1000 * t + int(rng.integers(0, 500))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(
        event_type="rating", weight=1.0)


@pytest.mark.parametrize("protocol", ["random", "temporal"])
def test_split_is_per_user_and_disjoint(protocol: str) -> None:
    frame = _interactions()
    got = split_per_user(frame, protocol, share=0.25, seed=42)
    train_pairs = set(zip(got.train.user_id, got.train.item_id, strict=True))
    held_pairs = set(zip(got.held_out.user_id, got.held_out.item_id, strict=True))
    assert not train_pairs & held_pairs
    assert len(got.train) + len(got.held_out) == len(frame)  # no pair repeats in this set
    for user, rows in frame.groupby("user_id"):
        n = len(rows)
        n_train = int((got.train.user_id == user).sum())
        n_held = int((got.held_out.user_id == user).sum())
        if n < 2:  # too few to split: training only
            assert (n_train, n_held) == (n, 0)
        else:
            assert n_train == int(np.floor(n * 0.75)) and n_held == n - n_train
            assert n_train >= 1 and n_held >= 1
        if protocol == "temporal" and n >= 2:
            last_train = got.train.loc[got.train.user_id == user, "timestamp"].max()
            held_items = set(got.held_out.loc[got.held_out.user_id == user, "item_id"])
            held_ts = rows.loc[rows.item_id.isin(held_items), "timestamp"]
            assert held_ts.min() >= last_train


def test_random_split_depends_on_the_seed_only() -> None:
    frame = _interactions()
    a = split_per_user(frame, "random", seed=42)
    b = split_per_user(frame.sample(frac=1.0, random_state=3), "random", seed=42)
    c = split_per_user(frame, "random", seed=43)
    assert a.held_out.equals(b.held_out)
    assert not a.held_out.equals(c.held_out)


def test_held_out_drops_items_seen_in_training() -> None:
    frame = pd.DataFrame({"user_id": ["a"] * 4, "item_id": ["x", "y", "x", "z"],
                          "timestamp": [1, 2, 3, 4]})
    got = split_per_user(frame, "temporal")
    # train: x, y, x (floor(4 * .75) = 3); held out: z; a repeat of x would not count
    assert list(got.held_out.item_id) == ["z"]


def test_training_dir_is_a_data_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from batch.data import contract
    from batch.evaluation.split import read_interactions, read_table

    src = tmp_path / "src"
    src.mkdir()
    frame = _interactions()
    contract.write_table(src, contract.INTERACTIONS, pa.Table.from_pandas(frame, preserve_index=False))
    items = pa.table({"item_id": ["i1"], "title": ["t"], "genres": ["g"],
                      "available_regions": pa.array([None], pa.string())})
    contract.write_table(src, contract.ITEMS, items)
    got = split_per_user(read_interactions(src), "random")
    out = write_training_dir(src, got, tmp_path / "train")
    back = read_interactions(out)
    assert len(back) == len(got.train)
    assert read_table(out, "items").equals(items)
    assert read_table(out, "users") is None


def test_scores_match_hand_computed_metrics() -> None:
    held = pd.DataFrame({"user_id": ["a", "a", "a", "b", "c"],
                         "item_id": ["1", "2", "3", "9", "5"]})
    seen = pd.DataFrame({"user_id": ["a"], "item_id": ["7"]})
    lists = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 2,
                          "item_id": ["7", "2", "4", "1", "8", "9"],
                          "rank": [1, 2, 3, 4, 1, 2]})
    got = scoring.score(lists, held, seen, k=3)
    # a: "7" is a training item, removed -> [2, 4, 1]: hits at 1 and 3 of min(3, 3) relevant
    ndcg_a = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3) + 1 / np.log2(4))
    ndcg_b = (1 / np.log2(3)) / 1.0
    assert got["ndcg@3"] == pytest.approx((ndcg_a + ndcg_b + 0.0) / 3)  # c has no list: 0
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert got["recall@3"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert got["map@3"] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 2) / 1 + 0) / 3)
    assert got["users"] == 3 and got["users_with_list"] == 2
    # the same through the reference definition
    ref = [user_metrics(["2", "4", "1"], ["1", "2", "3"], 3), user_metrics(["8", "9"], ["9"], 3)]
    assert got["ndcg@3"] == pytest.approx(sum(m.ndcg for m in ref) / 3)
    assert got["map@3"] == pytest.approx(sum(m.map for m in ref) / 3)


def test_scores_on_random_lists_agree_with_the_reference() -> None:
    frame = _interactions(seed=5)
    data = split_per_user(frame, "random")
    rng = np.random.default_rng(1)
    users = sorted(data.held_out.user_id.unique())
    rows = [(u, f"i{i}", r + 1) for u in users[::2]
            for r, i in enumerate(rng.choice(60, size=15, replace=False))]
    lists = pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])
    got = scoring.score(lists, data.held_out, data.train, k=10)
    cleaned = scoring.clean_lists(lists, data.train, 10)
    ref = []
    for user in users:
        rel = data.held_out.loc[data.held_out.user_id == user, "item_id"].tolist()
        ranked = cleaned.loc[cleaned.user_id == user].sort_values("rank").item_id.tolist()
        ref.append(user_metrics(ranked, rel, 10))
    assert got["ndcg@10"] == pytest.approx(np.mean([m.ndcg for m in ref]))
    assert got["recall@10"] == pytest.approx(np.mean([m.recall for m in ref]))
    train_pairs = set(zip(data.train.user_id, data.train.item_id, strict=True))
    assert not any((u, i) in train_pairs for u, i in zip(cleaned.user_id, cleaned.item_id, strict=True))


def test_popularity_lists_skip_each_users_items() -> None:
    train = pd.DataFrame({"user_id": ["a", "a", "b", "c", "c", "c"],
                          "item_id": ["x", "y", "x", "x", "y", "z"]})
    lists = scoring.popularity_lists(train, pd.Index(["a", "d"]), k=2)
    top = scoring.clean_lists(lists, train, 2)
    assert top.loc[top.user_id == "a", "item_id"].tolist() == ["z"]
    assert top.loc[top.user_id == "d", "item_id"].tolist() == ["x", "y"]


def test_ease_baseline_never_proposes_training_items_and_beats_popularity() -> None:
    # Two taste groups: an item-item model must learn them, popularity cannot.
    rng = np.random.default_rng(3)
    rows = []
    for u in range(120):
        group = u % 2
        for t, i in enumerate(rng.choice(20, size=10, replace=False) + 20 * group):
            rows.append((f"u{u}", f"i{i}", t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    data = split_per_user(frame, "random")
    users = pd.Index(data.held_out.user_id.unique())
    inner = split_per_user(data.train, "random", seed=43)
    tuned = scoring.tune_ease(inner.train, inner.held_out, max_items=100, min_count=1,
                              grid=(1.0, 10.0))
    fit = scoring.EaseFit(data.train, 100, 1)
    from shared import ease

    fit.weights = ease.solve(fit.gram(), tuned.lam)
    lists = fit.lists(users)
    train_pairs = set(zip(data.train.user_id, data.train.item_id, strict=True))
    assert not any((u, i) in train_pairs for u, i in zip(lists.user_id, lists.item_id, strict=True))
    got = scoring.score(lists, data.held_out, data.train)
    pop = scoring.score(scoring.popularity_lists(data.train, users), data.held_out, data.train)
    assert got["ndcg@10"] > 1.5 * pop["ndcg@10"]
    assert fit.coverage == 1.0
