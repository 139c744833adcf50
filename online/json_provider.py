"""Flask's JSON through orjson: the answer rows encode ~5x faster than with the stdlib
encoder, a measurable share of a cached request's CPU time at saturation."""

from __future__ import annotations

from typing import Any, cast

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    """Encodes with orjson (numpy scalars and arrays included, dates as ISO 8601), falling
    back to Flask's own conversions (Decimal, __html__) for anything orjson does not know."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self._fallback = self.default

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self._fallback, option=_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        body = orjson.dumps(obj, default=self._fallback, option=_OPTIONS)
        app = cast(Flask, self._app)  # typed as the sans-IO base; it is the Flask app
        return app.response_class(body, mimetype=self.mimetype)
