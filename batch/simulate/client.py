"""The simulator's side of the HTTP API: what a product service would call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests


class ServiceError(RuntimeError):
    """The service answered something a product service could not use."""


@dataclass
class ServiceClient:
    base_url: str
    timeout_s: float = 10.0
    session: requests.Session = field(default_factory=requests.Session)

    def recommend(self, user_id: str, k: int) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base_url}/v1/recommendations",
            json={"user_id": user_id, "k": k},
            timeout=self.timeout_s,
        )
        if response.status_code != 200:
            raise ServiceError(f"recommendations {response.status_code}: {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    def post_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base_url}/v1/events", json={"events": events}, timeout=self.timeout_s
        )
        if response.status_code not in (200, 202):
            raise ServiceError(f"events {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return body

