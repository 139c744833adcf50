"""`recsys data generate`: contract, realism (skew, tastes, sessions), determinism, bad rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from batch.data import contract, generate
from batch.data.cli import data_app
from batch.data.generate import GenerateConfig


def _cfg(out: Path, **overrides: object) -> GenerateConfig:
    base: dict[str, object] = dict(
        out_dir=out, n_users=300, n_items=1_000, n_events=30_000, seed=11, n_regions=5
    )
    return GenerateConfig(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateConfig, dict]:
    """One clean data set shared by the read-only tests (generation is the slow part)."""
    cfg = _cfg(tmp_path_factory.mktemp("gen"))
    result = generate.generate(cfg)
    frames = {
        name: pq.read_table(cfg.out_dir / f"{name}.parquet").to_pandas()
        for name in contract.CONTRACT_FILES
    }
    return cfg, {"result": result, **frames}


def test_writes_the_contract_with_exact_counts(dataset) -> None:
    cfg, d = dataset
    for name, schema in [
        ("interactions", contract.interactions_schema()),
        ("items", contract.items_schema()),
        ("users", contract.users_schema()),
    ]:
        assert pq.read_schema(cfg.out_dir / f"{name}.parquet") == schema
    events, items, users = d["interactions"], d["items"], d["users"]
    assert len(events) == d["result"].rows == 30_000
    assert (len(items), len(users)) == (1_000, 300)
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert set(events["item_id"]) <= set(items["item_id"])
    assert set(events["user_id"]) == set(users["user_id"])  # events >= users: all active
    assert set(users["region"]) == {"US", "GB", "DE", "FR", "IN"}
    assert not events.duplicated(["user_id", "item_id", "timestamp", "event_type"]).any()


def test_items_have_one_to_three_genres_and_titled_by_the_first(dataset) -> None:
    _, d = dataset
    items = d["items"]
    n_genres = items["genres"].str.split("|").str.len()
    assert n_genres.between(1, 3).all()
    assert set(n_genres) == {1, 2, 3}
    assert set(items["genres"].str.split("|").explode()) <= set(generate.GENRES)
    first = items["genres"].str.split("|").str[0]
    assert (items["title"] == "Item " + items.index.astype(str) + " (" + first + ")").all()


def test_events_lie_in_the_window_with_typed_weights(dataset) -> None:
    cfg, d = dataset
    events = d["interactions"]
    assert cfg.end_ts == 1767225599  # 2025-12-31T23:59:59Z
    assert events["timestamp"].between(cfg.start_ts, cfg.end_ts).all()
    assert cfg.end_ts - cfg.start_ts + 1 == 365 * 86_400
    share = events["event_type"].value_counts(normalize=True)
    assert set(share.index) == set(generate.EVENT_TYPES)
    assert share["view"] > share["click"] > share["rating"] > share["purchase"] > 0.03
    by_type = events.groupby("event_type")["weight"]
    assert by_type.min()[["view", "click", "purchase"]].tolist() == [1.0, 2.0, 5.0]
    assert by_type.max()[["view", "click", "purchase"]].tolist() == [1.0, 2.0, 5.0]
    stars = events.loc[events["event_type"] == "rating", "weight"]
    assert set(stars) <= {1.0, 2.0, 3.0, 4.0, 5.0} and stars.mean() > 3.0


def test_item_popularity_is_skewed(dataset) -> None:
    _, d = dataset
    counts = d["interactions"]["item_id"].value_counts()
    top_1pct = counts.iloc[:10].sum() / counts.sum()  # 10 of 1,000 items
    assert top_1pct > 0.25  # uniform popularity would give 1%
    bottom_half = counts.reindex(d["items"]["item_id"], fill_value=0).nsmallest(500).sum()
    assert bottom_half / counts.sum() < 0.15


def test_user_activity_is_heavy_tailed(dataset) -> None:
    _, d = dataset
    per_user = d["interactions"]["user_id"].value_counts()
    assert per_user.min() >= 1
    assert per_user.max() > 10 * per_user.median()


def _top3_genre_share(events: pd.DataFrame) -> float:
    """Median over users with >= 50 events of the share of their events in their top 3 genres."""
    heavy = events.groupby("user_id").filter(lambda g: len(g) >= 50)
    per_user = heavy.groupby(["user_id", "genre"]).size().groupby(level=0)
    return float(per_user.apply(lambda s: s.nlargest(3).sum() / s.sum()).median())


def test_users_concentrate_on_few_genres(dataset) -> None:
    _, d = dataset
    genre = d["items"].set_index("item_id")["genres"].str.split("|").str[0]
    events = d["interactions"].assign(genre=lambda e: e["item_id"].map(genre))
    # Baseline: same events with genres shuffled across users, i.e. popularity alone.
    shuffled = events.assign(genre=np.random.default_rng(0).permutation(events["genre"]))
    real, baseline = _top3_genre_share(events), _top3_genre_share(shuffled)
    assert real > 0.6
    assert real > baseline + 0.1


def test_regional_availability_is_respected(dataset) -> None:
    _, d = dataset
    items = d["items"]
    restricted = items["available_regions"].notna().mean()
    assert 0.08 < restricted < 0.25
    merged = d["interactions"].merge(d["users"], on="user_id").merge(items, on="item_id")
    limited = merged[merged["available_regions"].notna()]
    assert len(limited) > 0
    pairs = zip(limited["region"], limited["available_regions"], strict=True)
    assert all(region in allowed.split("|") for region, allowed in pairs)


def test_events_cluster_in_sessions(dataset) -> None:
    _, d = dataset
    events = d["interactions"]
    gaps = events.groupby("user_id")["timestamp"].diff().dropna()
    assert (gaps >= 0).all()  # rows come sorted by (user, time)
    assert (gaps <= 300).mean() > 0.6  # most next events follow within 5 minutes
    assert (gaps >= 3_600).mean() > 0.1  # and sessions are separated by long breaks


def test_same_seed_same_content_other_seed_differs(tmp_path: Path) -> None:
    small = dict(n_users=50, n_items=80, n_events=3_000, bad_share=0.02)
    generate.generate(_cfg(tmp_path / "a", **small))
    generate.generate(_cfg(tmp_path / "b", **small))
    generate.generate(_cfg(tmp_path / "c", seed=12, **small))
    for name in contract.CONTRACT_FILES:
        a = pq.read_table(tmp_path / "a" / f"{name}.parquet")
        assert a.equals(pq.read_table(tmp_path / "b" / f"{name}.parquet")), name
    a = pq.read_table(tmp_path / "a" / "interactions.parquet")
    assert not a.equals(pq.read_table(tmp_path / "c" / "interactions.parquet"))


def test_bad_share_injects_each_kind(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, n_users=100, n_items=200, n_events=20_000, bad_share=0.05)
    result = generate.generate(cfg)
    events = pq.read_table(tmp_path / "interactions.parquet").to_pandas()
    known = set(pq.read_table(tmp_path / "items.parquet")["item_id"].to_pylist())

    found = {
        "empty_user": int((events["user_id"] == "").sum()),
        "empty_item": int((events["item_id"] == "").sum()),
        "future_timestamp": int((events["timestamp"] > cfg.end_ts).sum()),
        "duplicate": int(
            events.duplicated(["user_id", "item_id", "timestamp", "event_type"]).sum()
        ),
        "unknown_item": int((~events["item_id"].isin(known) & (events["item_id"] != "")).sum()),
    }
    assert len(events) == 20_000
    assert result.bad_rows == 1_000
    assert found == result.bad_by_kind
    assert all(180 <= n <= 220 for n in found.values()), found


def test_chunks_become_row_groups(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(generate, "CHUNK_EVENTS", 1_000)
    result = generate.generate(_cfg(tmp_path, n_users=100, n_items=100, n_events=10_000))
    meta = pq.ParquetFile(tmp_path / "interactions.parquet").metadata
    assert meta.num_rows == 10_000
    assert meta.num_row_groups == result.row_groups >= 8
    assert pq.read_metadata(tmp_path / "users.parquet").num_rows == 100


def test_fewer_events_than_users(tmp_path: Path) -> None:
    result = generate.generate(_cfg(tmp_path, n_users=1_000, n_items=50, n_events=300))
    assert result.rows == 300
    assert 0 < result.users_with_events <= 300
    assert pq.read_metadata(tmp_path / "users.parquet").num_rows == 1_000


def test_custom_window_and_single_region(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, n_events=5_000, end_date=date(2024, 2, 29), days=7, n_regions=1)
    generate.generate(cfg)
    ts = pq.read_table(tmp_path / "interactions.parquet")["timestamp"].to_numpy()
    day = pd.to_datetime(ts, unit="s", utc=True).strftime("%Y-%m-%d")
    assert day.min() == "2024-02-23" and day.max() == "2024-02-29"
    items = pq.read_table(tmp_path / "items.parquet")
    assert items["available_regions"].null_count == items.num_rows


def test_cli_generate_writes_readme_and_summary(tmp_path: Path) -> None:
    args = ["generate", "--out", str(tmp_path), "--users", "20", "--items", "30"]
    args += ["--events", "500", "--seed", "5", "--bad-share", "0.1"]
    res = CliRunner().invoke(data_app, args)
    assert res.exit_code == 0, res.output
    assert "generated 500 rows, 50 malformed" in res.output
    readme = (tmp_path / "README.txt").read_text()
    assert "--seed 5" in readme and "--events 500" in readme and "--bad-share 0.1" in readme


def test_cli_rejects_a_bad_date(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        data_app, ["generate", "--out", str(tmp_path), "--end-date", "2025-13-01"]
    )
    assert res.exit_code == 2
    assert "YYYY-MM-DD" in res.output


def test_draw_rows_samples_each_rows_distribution() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.5]])
    rows = np.repeat([0, 1, 2], 4_000)
    picked = generate._draw_rows(probs, rows, np.random.default_rng(0).random(len(rows)))
    assert (picked[:4_000] == 0).all() and (picked[4_000:8_000] == 2).all()
    assert set(picked[8_000:]) == {1, 2}
    assert abs((picked[8_000:] == 1).mean() - 0.5) < 0.03


def test_zero_events_still_writes_every_file(tmp_path: Path) -> None:
    result = generate.generate(_cfg(tmp_path, n_users=3, n_items=2, n_events=0))
    assert (result.rows, result.users_with_events) == (0, 0)
    assert pq.read_metadata(tmp_path / "interactions.parquet").num_rows == 0
    assert pq.read_metadata(tmp_path / "users.parquet").num_rows == 3
    assert "time range no rows" in result.summary()
