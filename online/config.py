"""Service configuration: one frozen, validated object built from flags and RECSYS_* env.

The CLI validates flags, exports them as RECSYS_* variables and execs gunicorn; each worker
then rebuilds the same object from the environment in `create_app()`. The environment is
therefore the single channel between the master and its workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.events import DEFAULT_EVENT_TYPES

ENV_PREFIX = "RECSYS_"


class ServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    artifacts: Path = Field(description="artifact root holding CURRENT and runs/")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(1, ge=1, le=64, description="gthread threads per worker")
    budget_ms: float = Field(50.0, ge=0.0, description="latency budget per request")
    admin_token: str | None = Field(None, description="X-Admin-Token for /admin/*")
    reload_poll_seconds: float = Field(10.0, ge=0.0, description="0 disables polling")
    verify_checksums: bool = True
    ann_k: int = Field(100, ge=1, le=2000, description="neighbours per ANN query")
    recent_k: int = Field(30, ge=1, le=500, description="neighbours per recent item")
    max_recent_items: int = Field(50, ge=1, le=1000)
    max_candidates: int = Field(1000, ge=1, le=10_000)
    cache_size: int = Field(50_000, ge=0, description="entries per LRU cache (0 disables)")
    scored_cache_size: int = Field(
        10_000, ge=0, description="users' re-ranked candidate sets kept (~3 KB each; 0 disables)"
    )
    max_content_length: int = Field(256 * 1024, ge=1024, description="request body bytes")
    # The slow-client defence (online/gworker.py, docs/service.md): a request must arrive,
    # headers and body, within read_timeout of its first byte (else 408), and it is read by
    # one of read_threads threads per worker before it may take one of the `threads` that
    # run the application.
    read_timeout: float = Field(
        10.0, gt=0.0, le=300.0, description="seconds for a request to arrive, then 408"
    )
    read_threads: int = Field(
        32, ge=1, le=1024, description="threads per worker reading requests before the app"
    )
    # gunicorn's worker timeout: the master kills (SIGABRT, then SIGKILL) a worker whose
    # event loop has not checked in for this long (stopped, or stuck in C code holding the
    # GIL) and starts another. The loop checks in at least once a second, so 2 s is the
    # floor. It does not bound a request (those run on the worker's threads, apart from the
    # loop) nor the bundle load before the worker's first check-in: gunicorn starts the
    # clock at that check-in (docs/service.md, Drills).
    worker_timeout: int = Field(
        60, ge=2, le=3600, description="seconds a worker may go silent before it is replaced"
    )
    # Wrong X-Admin-Token answers per client address (per worker): a burst, then a rate.
    admin_failures_burst: int = Field(10, ge=1, le=10_000)
    admin_failures_per_minute: float = Field(10.0, gt=0.0, le=60_000.0)
    log_level: str = "INFO"
    # Shared by the workers of one server: an admin reload in one tells the others.
    runtime_dir: Path | None = None
    # Names this server's record of its last accepted bundle, ART/accepted/<server_id>
    # (docs/service.md); None: "<hostname>-<port>". Unique per server on one ART.
    server_id: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="name of this server's accepted-bundle record (default <hostname>-<port>)",
    )
    # Deterministic switch for tests and drills: every budgeted stage is skipped.
    force_fallback: bool = False
    # The served-request log the nightly run loads into the warehouse (docs/warehouse.md).
    request_log: bool = Field(True, description="write ART/served_log Parquet files")
    request_log_rotate_seconds: float = Field(60.0, gt=0.0, description="max age of a log file")
    event_log: bool = Field(True, description="write ART/event_log Parquet files")
    # What a kill -9 of a worker can lose from either log (shared/parquet_log.py).
    log_flush_seconds: float = Field(
        0.2, gt=0.0, le=60.0, description="seconds between appends of each log to its spool"
    )
    # Feedback events (POST /v1/events, docs/feedback.md).
    event_types: tuple[str, ...] = Field(
        DEFAULT_EVENT_TYPES, min_length=1, description="accepted event types (comma-separated)"
    )
    events_max_age_seconds: float = Field(
        7 * 86400.0, gt=0.0, description="events older than this (by ts) are refused"
    )
    events_max_future_seconds: float = Field(
        300.0, ge=0.0, description="clock skew tolerated for a ts ahead of the server's"
    )
    events_dedup_seconds: float = Field(
        86400.0, gt=0.0, description="window in which a repeated event_id is a duplicate"
    )
    # The real-time store (online/realtime): recent items and exclusions from events.
    realtime: Literal["sqlite", "redis", "memory", "off"] = Field(
        "sqlite", description="sqlite (one machine), redis (replicas), memory (tests), off"
    )
    redis_url: str | None = Field(None, description="redis://host:port/db; implies realtime=redis")
    realtime_max_recent: int = Field(50, ge=1, le=1000, description="recent items kept per user")
    realtime_ttl_seconds: float = Field(
        3 * 86400.0, gt=0.0, description="how long a recent item or exclusion lasts"
    )
    # Shadow scoring (online/shadow.py, docs/experiments.md): the shadow's own threads and
    # queue per worker, and the request time past which a request is not shadowed.
    shadow_threads: int = Field(1, ge=1, le=16, description="shadow ranking threads per worker")
    shadow_queue_size: int = Field(
        32, ge=1, le=10_000, description="shadow jobs waiting per worker; past it they are dropped"
    )
    shadow_max_budget_share: float = Field(
        0.5, ge=0.0, le=1.0,
        description="a request that used more than this share of budget_ms is not shadowed",
    )
    shadow_log: bool = Field(True, description="write ART/shadow_log Parquet files")
    # Train/serve skew (online/skew.py, docs/monitoring.md): a share of re-ranked requests
    # hands its feature matrix to a background thread that bins it on the bundle's training
    # bin edges and exports recsys_feature_skew_psi{feature}.
    skew_sample_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="share of re-ranked requests sampled (0 disables)"
    )
    skew_queue_size: int = Field(
        64, ge=1, le=10_000, description="samples waiting per worker; past it they are dropped"
    )
    skew_min_rows: int = Field(
        200, ge=1, description="sampled rows (candidates) before the PSI gauge is exported"
    )
    skew_min_requests: int = Field(
        50, ge=1, description="sampled requests before the PSI gauge is exported"
    )
    skew_window_rows: int = Field(
        100_000, ge=100, description="past this many rows the counts are halved (recent traffic)"
    )
    skew_reference: Literal["candidates", "training"] = Field(
        "candidates", description="the bundle's feature_stats sample the live rows are compared with"
    )
    skew_log: bool = Field(True, description="write ART/skew_log Parquet files")
    skew_log_rows: int = Field(
        10, ge=0, le=10_000, description="candidates logged per sampled request"
    )
    # Serve the popular list to everyone (the simulator's and experiments' baseline arm).
    popular_only: bool = False

    @field_validator("event_types", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        # From the environment the set arrives as one comma-separated string.
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """Defaults, then RECSYS_* variables, then explicit overrides (None means unset)."""
        source = os.environ if env is None else env
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            value = source.get(ENV_PREFIX + name.upper())
            if value is not None and value != "":
                data[name] = value
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    def to_env(self) -> dict[str, str]:
        """The RECSYS_* variables that rebuild this config in another process."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                if isinstance(value, bool):
                    text = str(value).lower()
                elif isinstance(value, list | tuple):
                    text = ",".join(str(v) for v in value)
                else:
                    text = str(value)
                out[ENV_PREFIX + name.upper()] = text
        return out


def describe_error(exc: ValidationError) -> str:
    """One line per bad setting, naming the flag/variable to fix."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"{field} ({ENV_PREFIX}{field.upper()}): {err['msg']}")
    return "; ".join(lines)
