"""The event log's type -> interaction mapping, and which day files a run reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from batch.feedback import TypeWeights, is_enabled, log_dir, part_files, partitions
from shared.config import EventsConfig, PipelineConfig
from shared.errors import DataContractError


def test_default_weights_grow_along_the_funnel_and_keep_feedback_apart() -> None:
    tw = TypeWeights.of(dict(EventsConfig().type_weights))
    assert tw.weight("click", None) == 1.0
    assert tw.weight("play", None) == 2.0
    assert tw.weight("complete", None) == 3.0
    assert tw.weight("rating", 4.5) == 4.5  # a rating is worth its value
    assert tw.weight("rating", None) is None  # ... and without one it is refused
    assert tw.weight("impression", None) is None
    assert tw.weight("dislike", None) is None
    assert tw.feedback == {"impression", "dislike"}
    assert tw.known == {"impression", "click", "play", "complete", "rating", "dislike"}
    assert tw.weight("share", None) is None and "share" not in tw.known


def test_type_weights_come_from_the_config_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "pipeline.json"
    cfg_file.write_text('{"events": {"type_weights": {"play": 5, "rating": 2.0, "dislike": null},'
                        ' "window_days": 7}, "ranker": {"impression_negatives": false}}')
    cfg = PipelineConfig.load(cfg_file)
    tw = TypeWeights.of(dict(cfg.events.type_weights))
    assert tw.weight("play", None) == 5.0
    assert tw.weight("rating", 4.0) == 2.0  # a fixed weight now, not the value
    assert "click" not in tw.known  # not listed: quarantined as unknown_event_type
    assert cfg.events.window_days == 7
    assert cfg.ranker.impression_negatives is False
    assert PipelineConfig().ranker.impression_negatives is True


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="window_days"):
        EventsConfig(window_days=0)
    with pytest.raises(ValidationError, match="type_weights"):
        EventsConfig(type_weights={"play": "lots"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="impression_negatives_per_user"):
        PipelineConfig.model_validate({"ranker": {"impression_negatives_per_user": -1}})


def test_enabled_follows_the_directory_unless_set(tmp_path: Path) -> None:
    art = tmp_path / "art"
    assert log_dir(EventsConfig(), art) == art / "event_log"
    assert not is_enabled(EventsConfig(), art)
    (art / "event_log").mkdir(parents=True)
    assert is_enabled(EventsConfig(), art)
    assert not is_enabled(EventsConfig(enabled=False), art)
    with pytest.raises(DataContractError, match="no event log"):
        is_enabled(EventsConfig(enabled=True, path=str(tmp_path / "nowhere")), art)


def test_partitions_of_the_window_only_up_to_the_run_date(tmp_path: Path) -> None:
    for name in ("date=2024-01-01", "date=2024-01-24", "date=2024-01-25", "date=2024-01-31",
                 "date=2024-02-01", "date=2024-13-40", "notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0.parquet").write_bytes(b"x")
        (tmp_path / name / ".part-1.parquet").write_bytes(b"x")
    got = partitions(tmp_path, dt.date(2024, 1, 31), window_days=7)
    assert [p.name for p in got] == ["date=2024-01-25", "date=2024-01-31"]
    assert [f.name for f in part_files(got)] == ["part-0.parquet", "part-0.parquet"]
    assert partitions(tmp_path / "missing", dt.date(2024, 1, 31), 7) == []
