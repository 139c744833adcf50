"""Pipeline configuration: defaults, JSON overrides, refusal of unknown keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import PipelineConfig


def test_overrides_from_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"split": {"protocol": "random"}, "publish": {"top_k": 200}}))
    cfg = PipelineConfig.load(path, spark_master="spark://h:7077")
    assert cfg.split.protocol == "random" and cfg.publish.top_k == 200
    assert cfg.spark_master == "spark://h:7077"
    assert cfg.fingerprint() != PipelineConfig().fingerprint()


def test_unknown_or_invalid_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        PipelineConfig.model_validate({"splitt": {}})
    with pytest.raises(ValidationError, match="top_k"):
        PipelineConfig.model_validate({"publish": {"top_k": 10}})
