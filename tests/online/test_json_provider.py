"""Responses are encoded by orjson, with the same JSON the stdlib provider would write."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import numpy as np
from flask import Flask
from flask.testing import FlaskClient

from online.json_provider import OrjsonProvider
from tests.online.conftest import recommend


def test_the_app_encodes_with_orjson_and_keeps_the_documented_key_order(client: FlaskClient) -> None:
    assert isinstance(client.application.json, OrjsonProvider)
    data = recommend(client, user_id="u2", k=3)
    assert list(data)[:3] == ["user_id", "items", "bundle"]
    assert list(data["items"][0]) == ["item_id", "score", "sources", "title"]


def test_numpy_and_dates_encode_and_unknown_types_fall_back_to_flask() -> None:
    provider = OrjsonProvider(Flask(__name__))
    value = {"when": dt.date(2026, 11, 23), "n": np.int64(3), "x": np.float32(0.5),
             "amount": decimal.Decimal("1.25")}
    encoded = json.loads(provider.dumps(value))
    assert encoded == {"when": "2026-11-23", "n": 3, "x": 0.5, "amount": "1.25"}
    assert provider.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
