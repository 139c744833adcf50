"""Request and response models: the validation rules and the source of /openapi.json."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _integral(value: object) -> object:
    """126.0 is the integer 126: JSON Schema's (and so OpenAPI 3.1's) `integer` is any number
    without a fractional part, and some JSON encoders write every number as a float. A
    fraction (126.5), a string ("126") or a boolean is still refused by StrictInt."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A count in a JSON body: an integer, or a number equal to one (see _integral).
Count = Annotated[StrictInt, BeforeValidator(_integral)]
ServedBy = Literal["rerank", "precomputed", "popular_segment", "popular", "caller_order", "ann"]


class _Strict(BaseModel):
    # Unknown fields are refused so a misspelt field name is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class Context(_Strict):
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    recent_item_ids: list[Id] = Field(default_factory=list, max_length=1000)
    device: Annotated[str, StringConstraints(max_length=64)] | None = None


# The unit experiments hash (docs/experiments.md): a caller without a stable user id (an
# anonymous visitor behind a placeholder user_id) sends its own, e.g. a device id.
AssignmentId = Annotated[
    Id | None,
    Field(
        description="id whose hash picks the experiment arms (default: user_id); send a "
        "stable anonymous id (device, cookie) for callers without a user id"
    ),
]


class RecommendationRequest(_Strict):
    user_id: Id
    k: Count = Field(20, ge=1, le=200)
    context: Context = Field(default_factory=Context)
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=1000)
    assignment_id: AssignmentId = None


class RerankRequest(_Strict):
    user_id: Id
    candidate_item_ids: list[Id] = Field(min_length=1, max_length=1000)
    k: Count = Field(20, ge=1, le=1000)
    context: Context = Field(default_factory=Context)
    assignment_id: AssignmentId = None


class SimilarQuery(_Strict):
    k: int = Field(20, ge=1, le=200)


class Item(BaseModel):
    item_id: str
    score: float
    sources: list[str] = Field(description="where the item came from: precomputed, ann, ...")
    title: str | None = None


class ArmRef(BaseModel):
    experiment: str
    arm: str


class RecommendationResponse(BaseModel):
    user_id: str
    items: list[Item]
    bundle: str = Field(description="run id of the bundle that answered")
    served_by: ServedBy
    scorer: Literal["onnx-int8", "onnx-fp32", "als-dot", "fused"] | None = Field(
        description="the re-rank scorer, null when the answer did not come from re-ranking"
    )
    fallback_reason: str | None = Field(
        None, description="why the answer left the rerank path (';'-joined when several)"
    )
    experiment: str | None = Field(
        description="the first running experiment this request is in (null: none)"
    )
    arm: str | None = Field(description="its arm (null: no experiment)")
    experiments: list[ArmRef] = Field(
        description="every running experiment's arm for this request, in file order"
    )
    took_ms: float
    request_id: str = Field(
        description="X-Request-Id if sent, else generated; the key of the served-request log"
    )


class RerankResponse(RecommendationResponse):
    unknown_item_ids: list[str] = Field(default_factory=list)


class SimilarResponse(BaseModel):
    item_id: str
    items: list[Item]
    bundle: str
    took_ms: float


class ErrorResponse(BaseModel):
    error: str
    field: str | None = None


class ReloadResponse(BaseModel):
    status: Literal["loaded", "unchanged", "refused"]
    run_id: str | None
    serving: str | None = Field(description="run id served after the attempt")
    error: str | None = None


class RefusedBundle(BaseModel):
    run_id: str | None = Field(description="the run CURRENT names (null: CURRENT unreadable)")
    error: str


class ReadyResponse(BaseModel):
    ready: bool
    bundle: str | None
    scorer: str | None = None
    error: str | None = None
    refused: RefusedBundle | None = Field(
        None, description="set while CURRENT names a bundle this worker refused"
    )
