"""Service logs are one JSON object per line, keeping `extra=` fields."""

from __future__ import annotations

import json
import logging

from online.jsonlog import JsonFormatter


def test_record_becomes_json_with_extra_fields() -> None:
    record = logging.LogRecord(
        "online.x", logging.ERROR, __file__, 1, "bundle %s", ("refused",), None
    )
    record.run_id = "run-b"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "bundle refused" and line["level"] == "ERROR"
    assert line["run_id"] == "run-b" and line["logger"] == "online.x"


def test_exception_is_kept_in_the_log_not_lost() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]
