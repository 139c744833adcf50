"""The public JSON API: /v1/recommendations, /v1/rerank, /v1/items/<id>/similar, /v1/ping."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from flask import Blueprint, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from online import metrics
from online.admin import require_token_for
from online.bundle_loader import LoadedBundle
from online.errors import Loc, dotted_field, validation_error
from online.realtime import EMPTY, StoreUnavailable, UserState
from online.recommend import Answer, Query
from online.schemas import (
    RecommendationRequest,
    RerankRequest,
    SimilarQuery,
)
from online.service import get_service, require_bundle, took_ms
from online.shadow import ShadowJob
from shared.errors import ApiError, ExperimentsError
from shared.experiments import Assignment, Shadow, Treatment, merged_treatment
from shared.request_log import ServedRequest

bp = Blueprint("api", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)

# A store that is down fails every request's lookup: one log line per interval, not per
# request (the metric counts them all).
_STORE_LOG_INTERVAL = 30.0
_store_log_lock = threading.Lock()
_store_logged_at = float("-inf")


M = TypeVar("M", bound=BaseModel)

# QA's forced arm: `X-Recsys-Arm: experiment=arm[, experiment=arm]`, with the admin token.
ARM_HEADER = "X-Recsys-Arm"


def _require_json() -> None:
    """415 unless the body is declared JSON (application/json, or a +json type)."""
    mimetype = request.mimetype  # lower case, parameters such as charset stripped
    if mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        return
    given = request.content_type or "none"
    raise ApiError(415, f"Content-Type must be application/json, not {given}", "Content-Type")


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    parts, size = [], 0
    while size < limit:
        part = stream.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def read_body() -> bytes:
    """The request body, 413 above the limit whatever its framing.

    With a Content-Length, werkzeug refuses a length over the limit before reading. A
    chunked body has none, and werkzeug's limited stream stops at the limit in silence (a
    truncated body then failed as "not valid JSON"), so it is read up to one byte past the
    limit here: a body of exactly the limit passes, one byte more is refused.
    """
    limit = request.max_content_length
    if (
        limit is None
        or request.content_length is not None
        or "wsgi.input_terminated" not in request.environ  # no length, no safe way to read
    ):
        return request.get_data(cache=False)
    data = _read_at_most(request.environ["wsgi.input"], limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _parse(model: type[M], name_field: Callable[[Loc], str | None] = dotted_field) -> M:
    _require_json()
    try:
        return model.model_validate_json(read_body() or b"")
    except ValidationError as exc:
        raise validation_error(exc, name_field) from None


def _single_valued_args() -> dict[str, str]:
    """The query parameters, each at most once: `?k=3&k=999` is refused, not read as 3."""
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise ApiError(422, "query parameter given more than once", name)
    return request.args.to_dict()


@dataclass(frozen=True)
class _Arms:
    """A request's experiment arms, their merged treatment and the bundle it is served by."""

    assignments: list[Assignment]
    treatment: Treatment
    bundle: LoadedBundle
    # The served file's shadow and the bundles it held (from the same snapshot).
    shadow: Shadow | None = None
    held: dict[str, LoadedBundle] | None = None


def _forced_arms() -> dict[str, str] | None:
    """The arms the X-Recsys-Arm header forces (None: no header); 403 naming the header
    without the admin token, 422 when it is not `experiment=arm[, ...]`."""
    raw = request.headers.get(ARM_HEADER)
    if raw is None:
        return None
    require_token_for(ARM_HEADER)
    forced: dict[str, str] = {}
    for part in raw.split(","):
        name, sep, arm = (p.strip() for p in part.partition("="))
        if not sep or not name or not arm:
            raise ApiError(422, f"{ARM_HEADER} wants experiment=arm[, experiment=arm], got "
                           f"{raw!r}", ARM_HEADER)  # fmt: skip
        if name in forced:
            raise ApiError(422, f"{ARM_HEADER} names experiment {name!r} twice", ARM_HEADER)
        forced[name] = arm
    return forced


def _arms(unit: str) -> _Arms:
    """The unit's arms under the served experiments file (forced ones first), and the
    bundle to answer with: the arm's bundle when its treatment names one (held by the
    experiment store since the file was accepted), else CURRENT's."""
    forced = _forced_arms()
    experiments = get_service().experiments
    assignments: list[Assignment] = []
    held: dict[str, LoadedBundle] = {}
    shadow: Shadow | None = None
    if experiments is not None:
        try:
            assignments, snapshot = experiments.assign(unit, forced)
        except ExperimentsError as exc:
            raise ApiError(422, str(exc), ARM_HEADER) from None
        held = dict(snapshot.bundles)
        shadow = snapshot.file.shadow if snapshot.file is not None else None
    elif forced:
        raise ApiError(422, "no experiment runs on this server", ARM_HEADER)
    treatment = merged_treatment(assignments)
    bundle: LoadedBundle | None = None
    if treatment.bundle is not None:
        bundle = held.get(treatment.bundle)
        if bundle is None:  # cannot happen for an accepted file; counted if it ever does
            metrics.EXPERIMENT_UNAPPLIED.labels("bundle").inc()
    return _Arms(assignments, treatment, bundle or require_bundle(), shadow, held)


def _answer(user_id: str, answer: Answer, bundle: str, arms: _Arms) -> dict[str, Any]:
    first = arms.assignments[0] if arms.assignments else None
    return {
        "user_id": user_id,
        "items": answer.items,
        "bundle": bundle,
        "served_by": answer.served_by,
        "scorer": answer.scorer,
        "fallback_reason": answer.fallback_reason,
        "experiment": first.experiment if first else None,
        "arm": first.arm if first else None,
        "experiments": [{"experiment": a.experiment, "arm": a.arm} for a in arms.assignments],
    }


def _log_served(
    user_id: str, answer: Answer, bundle: str, took: float, endpoint: str, arms: _Arms
) -> str:
    """Hand the answer to the request log (a buffer append; files are written off-thread)."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    writer = get_service().request_log
    if writer is not None:
        # sources are shared.sources.names_of tuples (immutable, shared between answers).
        shown = [(it["item_id"], rank, float(it["score"]), tuple(it["sources"]))
                 for rank, it in enumerate(answer.items, start=1)]  # fmt: skip
        writer.log(
            ServedRequest(
                request_id=request_id,
                ts=dt.datetime.now(dt.UTC),
                user_id=user_id or None,
                bundle=bundle,
                served_by=answer.served_by,
                fallback_reason=answer.fallback_reason,
                items=shown,
                latency_ms=took,
                endpoint=endpoint,
                assignments=tuple((a.experiment, a.arm) for a in arms.assignments),
            )
        )
    return request_id


def _user_state(user_id: str) -> UserState:
    """The user's real-time state, fetched once per request; empty when the store is off,
    down or slow to fail: the request is served without it, never failed for it."""
    global _store_logged_at
    store = get_service().realtime
    if store is None:
        return EMPTY
    kind = type(store).__name__
    t0 = time.perf_counter()
    try:
        state = store.state(user_id, time.time())
    except StoreUnavailable as exc:
        metrics.REALTIME_ERRORS.labels(kind, "state").inc()
        with _store_log_lock:
            if t0 - _store_logged_at >= _STORE_LOG_INTERVAL:
                _store_logged_at = t0
                log.warning("real-time store unavailable, serving without it: %s", exc)
        return EMPTY
    metrics.REALTIME_LOOKUP_SECONDS.labels(kind).observe(time.perf_counter() - t0)
    return state


def _query(
    body: RecommendationRequest | RerankRequest, exclude: list[str], treatment: Treatment
) -> Query:
    recent = list(body.context.recent_item_ids)
    # An arm with realtime_recents=false is served as if the real-time store were off.
    state = EMPTY if treatment.realtime_recents is False else _user_state(body.user_id)
    if state is not EMPTY:
        # The request's own recent items win; else what the events say it just did. The
        # scored-candidate cache keys on the recent items, so a new event changes the key.
        if not recent:
            recent = list(state.recent_item_ids[: get_service().config.max_recent_items])
        # Just watched or disliked: not shown again (until the entry's TTL).
        exclude = [*exclude, *state.recent_item_ids, *state.excluded_item_ids]
    return Query(
        user_id=body.user_id,
        k=body.k,
        region=body.context.region,
        recent_item_ids=recent,
        device=body.context.device,
        exclude_item_ids=exclude,
        scorer=treatment.scorer,
        ann_k=treatment.ann_k,
        diversity=treatment.diversity is not False,
    )


def _respond(
    user_id: str, answer: Answer, arms: _Arms, endpoint: str
) -> dict[str, Any]:
    """The answer as JSON, after handing it to the served-request log."""
    took = took_ms()
    bundle = arms.bundle.run_id
    request_id = _log_served(user_id, answer, bundle, took, endpoint, arms)
    return _answer(user_id, answer, bundle, arms) | {"took_ms": took, "request_id": request_id}


@bp.post("/recommendations")
def recommendations() -> dict[str, Any]:
    body = _parse(RecommendationRequest)
    arms = _arms(body.assignment_id or body.user_id)
    query = _query(body, body.exclude_item_ids, arms.treatment)
    answer = get_service().recommender.recommend(arms.bundle, query, started=g.t0)
    out = _respond(body.user_id, answer, arms, "recommend")
    _shadow(arms, query, answer, out)
    return out


def _shadow(arms: _Arms, query: Query, answer: Answer, out: dict[str, Any]) -> None:
    """Hand a sampled request to the worker's shadow runner (online/shadow.py). After the
    answer is built, and whatever happens here the answer is sent unchanged."""
    runner = get_service().shadow
    if runner is None or not runner.sampled(arms.shadow):
        return
    try:
        assert arms.shadow is not None  # sampled() is False without one
        run_id = arms.shadow.bundle
        bundle = arms.bundle if run_id is None else (arms.held or {}).get(run_id)
        if bundle is None:  # cannot happen for an accepted file (its bundles are held)
            raise LookupError(f"shadow bundle {run_id!r} is not held")
        job = ShadowJob(
            request_id=out["request_id"], ts=dt.datetime.now(dt.UTC), shadow=arms.shadow,
            query=query, bundle=bundle, served_bundle=arms.bundle.run_id,
            served_scorer=answer.scorer,
            served_items=tuple(str(it["item_id"]) for it in answer.items),
            answered_at=time.perf_counter(),
        )  # fmt: skip
        runner.offer(job, float(out["took_ms"]))
    except Exception:  # shadow work never fails a request
        metrics.SHADOW.labels("error").inc()
        log.exception("shadow hand-off failed; the request is answered as it was")


@bp.post("/rerank")
def rerank() -> dict[str, Any]:
    body = _parse(RerankRequest)
    arms = _arms(body.assignment_id or body.user_id)
    answer = get_service().recommender.rerank(
        arms.bundle, _query(body, [], arms.treatment), body.candidate_item_ids, started=g.t0
    )
    out = _respond(body.user_id, answer, arms, "rerank")
    return out | {"unknown_item_ids": answer.unknown_item_ids}


@bp.get("/items/<item_id>/similar")
def similar(item_id: str) -> dict[str, Any]:
    try:
        query = SimilarQuery.model_validate(_single_valued_args())
    except ValidationError as exc:
        raise validation_error(exc) from None
    bundle = require_bundle()
    items = get_service().recommender.similar(bundle, item_id, query.k)
    if items is None:
        raise ApiError(404, f"unknown item {item_id!r}", "item_id")
    return {"item_id": item_id, "items": items, "bundle": bundle.run_id, "took_ms": took_ms()}


@bp.get("/ping")
def ping() -> dict[str, Any]:
    """The framework floor: no bundle, no work; the benchmark compares against it."""
    return {"pong": True}
