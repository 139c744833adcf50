"""Typed, frozen configuration of the nightly pipeline.

Built once in the entry point (defaults, then an optional JSON file, then CLI overrides)
and passed down; nothing reads the environment deep inside a job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidationConfig(_Frozen):
    max_bad_share: float = Field(0.05, ge=0.0, le=1.0, description="fail the run above this")
    drop_duplicates: bool = True


# What each feedback event type is worth as an interaction (ALS confidence, "seen").
# Finishing an item says more than starting it, and starting more than a click, so the
# weights grow along the funnel; a rating is worth its value ("value"); an impression is
# no interaction (the user was only shown it) and a dislike is a negative, never a
# positive: both None here, and each kept for what it is (docs/stages.md, "Feedback").
DEFAULT_TYPE_WEIGHTS: dict[str, float | Literal["value"] | None] = {
    "click": 1.0, "play": 2.0, "complete": 3.0, "rating": "value",
    "impression": None, "dislike": None,
}


class EventsConfig(_Frozen):
    """The service's feedback event log read as interactions (docs/stages.md, "Feedback")."""

    enabled: bool | None = Field(
        None, description="None: read the event log when its directory exists; False: never; "
        "True: always (a missing directory is then an error)",
    )
    path: str | None = Field(None, description="the event log; None: ART/event_log of the run")
    type_weights: dict[str, float | Literal["value"] | None] = Field(
        default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS),
        description="type -> interaction weight; 'value': the event's value (ratings); "
        "None: not an interaction (impression, dislike). A type not listed is quarantined.",
    )
    window_days: int = Field(
        30, ge=1, description="the event log's days read: the run date and the N-1 before it",
    )


class SplitConfig(_Frozen):
    # mixed: per user, half the held-out share newest by time, half random among the older
    # rest: the run's own metrics, its tuned weights and its re-ranked/fused choice then
    # reward both "what comes next" and "what this user likes" (docs/quality.md).
    protocol: Literal["mixed", "temporal", "random", "cutoff"] = "mixed"
    test_share: float = Field(0.25, gt=0.0, lt=1.0)
    cutoff: str | None = Field(None, description="ISO date, for protocol=cutoff")
    min_user_events: int = Field(2, ge=2, description="users with fewer events are train-only")
    max_eval_users: int | None = Field(
        50_000, ge=1,
        description="held-out users evaluated (a deterministic sample); None: all of them",
    )
    seed: int = 42


class AlsConfig(_Frozen):
    rank: int = Field(64, ge=2)
    max_iter: int = Field(12, ge=1)
    reg_param: float = Field(0.05, ge=0.0, description="Spark's ALS-WR regularisation")
    alpha: float = Field(20.0, ge=0.0)
    seed: int = 42
    checkpoint_interval: int = 5
    num_blocks: int | None = Field(
        None, ge=1, description="ALS user/item blocks; default: 1 per million ratings, 2..32"
    )
    # Where the factors are fitted (batch/spark/als.py, docs/benchmarks.md "ALS engines"):
    # "driver" = the `implicit` library on the driver over the collected matrix (one
    # machine, native code, an order of magnitude faster than MLlib here); "spark" = Spark
    # MLlib ALS on the executors (the matrix never leaves the cluster); "auto" = driver
    # while the matrix fits the two budgets below, else spark. The default stays "spark":
    # on the external temporal hold-out the driver engine's lists scored lower (0.1595 vs
    # 0.1749 nDCG@10, docs/quality.md) though its `ann` source is stronger; "auto" is the
    # fast night once that is closed.
    engine: Literal["auto", "spark", "driver"] = "spark"
    driver_max_ratings: int = Field(
        100_000_000, ge=0, description="auto: driver up to this many (user, item) pairs"
    )
    driver_max_memory_mb: int = Field(
        4_096, ge=0,
        description="auto: driver while its estimated memory for the matrix and factors "
        "(batch/spark/als.py:driver_memory_bytes) stays under this",
    )
    driver_threads: int | None = Field(
        None, ge=1,
        description="the driver engine's threads; None: the local master's cores, "
        "else spark.driver.cores (results do not depend on it)",
    )
    # implicit's regularisation is one constant for every user and item, where Spark's
    # reg_param is scaled by each one's number of ratings (ALS-WR): the two are not the
    # same number. This value was chosen by measured nDCG (docs/benchmarks.md).
    driver_reg_param: float = Field(
        100.0, ge=0.0, description="the driver engine's (unscaled) regularisation"
    )


class IndexConfig(_Frozen):
    exact_max_items: int = Field(50_000, description="flat (exact) index up to this size")
    hnsw_max_items: int = Field(2_000_000, description="HNSW up to this size, IVF beyond")
    hnsw_m: int = 32
    hnsw_ef_search: int = 256
    ivf_nprobe: int = 32
    recall_sample_queries: int = 1000


class CandidateConfig(_Frozen):
    ann_k: int = Field(300, ge=10)
    cooc_k: int = Field(300, ge=10)
    popular_k: int = Field(200, ge=10)
    cooc_history: int = Field(50, ge=2, description="recent items per user used for pairs")
    cooc_score_history: int = Field(
        20, ge=1, description="recent items per user whose neighbours are scored"
    )
    cooc_max_users: int = Field(
        100_000, ge=100, description="users (a deterministic sample) that estimate similarities"
    )
    cooc_neighbors: int = Field(50, ge=5, description="neighbours kept per item")
    cooc_min_count: int = Field(2, ge=1)
    trending_days: int = Field(30, ge=1)
    # EASE (shared/ease.py): a dense N x N inverse, N the most interacted items. The solve
    # grows as N^3 and a night makes 8 of them (6 for the λ grid, eval and full): 8,000
    # (256 MB per matrix, ~1 min per solve here) keeps a 60k-item night within minutes,
    # where 20,000 would take ~25 min per solve (docs/quality.md, "Cost").
    ease_k: int = Field(300, ge=10)
    ease_max_items: int = Field(8_000, ge=10, description="items EASE covers (most interacted)")
    ease_min_count: int = Field(5, ge=1, description="interactions an item needs to be covered")
    ease_lambda: float | None = Field(
        None, gt=0.0, description="fixed λ; None: tuned on the ranker window every run"
    )
    ease_lambda_grid: tuple[float, ...] = Field((100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0))
    ease_tune_users: int = Field(3000, ge=10, description="users of the ranker window scoring λ")
    source_weights: dict[str, float] = Field(
        default_factory=lambda: {"ann": 1.0, "cooc": 1.0, "ease": 1.0, "popular": 0.3}
    )


class RankerConfig(_Frozen):
    """The learned re-ranker (batch/ranker); see docs/reranker.md."""

    enabled: bool = Field(True, description="off: the lists keep the fused order")
    hidden: tuple[int, ...] = Field((128, 64), description="MLP hidden sizes; () = linear")
    negatives: int = Field(16, ge=1, description="sampled negatives per positive (listwise)")
    max_users: int = Field(20_000, ge=10, description="users in the training sample")
    candidate_users: int = Field(
        60_000, ge=10,
        description="users of the ranker window given candidates (a deterministic sample); "
        "the training sample is drawn from them",
    )
    max_negatives_per_user: int = Field(300, ge=10, description="candidates kept per user")
    label_protocol: Literal["same", "mixed"] = Field(
        "mixed", description="how the ranker window's labels are held out: the evaluation "
        "split's protocol, or half newest + half random (docs/quality.md)",
    )
    time_feature_dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="training only: share of rows whose time-context features are set to "
        "their training mean, so the model cannot lean on them alone",
    )
    val_share: float = Field(0.2, gt=0.0, lt=1.0, description="users held out for stopping")
    max_epochs: int = Field(40, ge=1)
    patience: int = Field(4, ge=1)
    learning_rate: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    batch_size: int = Field(256, ge=1)
    seed: int = 42
    parity_tolerance: float = Field(0.01, ge=0.0, description="int8 nDCG@10 within this of fp32")
    # monitoring/feature_stats.json (batch/ranker/feature_stats.py, docs/monitoring.md).
    stats_users: int = Field(
        2000, ge=1, description="users of the published candidates whose scored features "
        "are summarised (a deterministic sample)",
    )
    stats_training_rows: int = Field(
        50_000, ge=100, description="training-sample rows summarised (a seeded sample)"
    )
    prefer_int8: bool = Field(True, description="ship int8 when it passes parity")
    impression_negatives: bool = Field(
        True, description="impressions the user did not engage with (and dislikes) become "
        "explicit label-0 training rows, beside the sampled negatives (docs/reranker.md)",
    )
    impression_negatives_per_user: int = Field(
        50, ge=0, description="explicit negatives kept per training user (a seeded subset)",
    )
    incremental: bool = Field(
        True, description="rank: reuse the last published run's list of a user whose model "
        "inputs and run key (model bytes, top_k, features) are unchanged, score only the "
        "others; false (or RECSYS_RANK_FULL_RESCORE=1) rescores every user. Exact: the lists "
        "are the same either way (docs/reranker.md)",
    )


class PublishConfig(_Frozen):
    top_k: int = Field(100, ge=100)
    keep_runs: int = Field(5, ge=1)
    max_relative_drop: float = Field(0.2, ge=0.0, le=1.0)
    min_value: float = Field(0.0, ge=0.0, description="absolute floor of the gate metric")
    max_drop_vs_best_source: float = Field(
        0.0, ge=0.0, le=1.0, description="published lists may trail the best single source by this"
    )
    gate_metric: str = "ndcg@10"
    attribution_window_minutes: int = Field(
        30, ge=0, le=24 * 60,
        description="warehouse: a feedback event without a matching request_id is credited to "
        "the latest request that showed its item to its user at most this long before it",
    )
    # canary: the night's bundle is published beside CURRENT and served to canary_share of
    # the users as a rollout (docs/experiments.md, "Canary rollouts"); the guardrail check
    # promotes or rolls it back. The first run ever (no CURRENT) switches directly.
    mode: Literal["switch", "canary"] = Field(
        "switch", description="switch: CURRENT moves to the new run at once; canary: a rollout"
    )
    canary_share: float = Field(0.05, gt=0.0, lt=1.0, description="users the canary serves")


DriftAction = Literal["warn", "fail", "off"]

# Every input drift check, its default threshold and action (docs/monitoring.md says what
# each catches and why each default). A check breaches when its value exceeds its threshold.
# `quarantine_share` applies to every quarantine reason; `quarantine_share:<reason>` may set
# one reason apart.
DEFAULT_DRIFT_CHECKS: dict[str, tuple[float, DriftAction]] = {
    "volume_drop": (0.4, "fail"),
    "volume_spike": (1.0, "warn"),
    "type_volume_drop": (0.5, "warn"),
    "new_user_share": (0.5, "warn"),
    "new_item_share": (0.2, "warn"),
    "item_psi_prev": (0.05, "warn"),
    "item_js_prev": (0.008, "warn"),
    "item_psi_window": (0.05, "warn"),
    "item_js_window": (0.008, "warn"),
    "user_activity_psi": (0.05, "warn"),
    "quarantine_share": (0.01, "warn"),
    "freshness_hours": (24.0, "warn"),
    "input_age_at_run_hours": (48.0, "off"),
    # Feature drift (the rank stage, batch/ranker/feature_stats.py): per-feature PSI of the
    # published candidates as scored vs the last published run's, above the noise floor;
    # `feature_psi_prev:<feature>` sets one feature apart. Train vs candidates of the same
    # run differ by construction (sampled negatives), so it is recorded, off.
    "feature_psi_prev": (0.2, "warn"),
    "score_psi_prev": (0.2, "warn"),
    "feature_psi_train": (0.25, "off"),
}
QUARANTINE_CHECK = "quarantine_share"
# Checks recorded once per feature as "<check>:<feature>" (and configurable that way).
PER_NAME_CHECKS = (QUARANTINE_CHECK, "feature_psi_prev", "feature_psi_train")


class DriftCheckConfig(_Frozen):
    """One check's setting; a field left out keeps the check's default."""

    threshold: float | None = Field(None, ge=0.0, description="breach above this value")
    action: DriftAction | None = Field(
        None, description="warn: record it; fail: stop the run before publish; off: record "
        "the value only",
    )


class ResolvedCheck(_Frozen):
    threshold: float
    action: DriftAction


class DriftConfig(_Frozen):
    """Input drift checks run after validate on every nightly run (docs/monitoring.md)."""

    enabled: bool = Field(True, description="off: no drift stage work, nothing recorded")
    checks: dict[str, DriftCheckConfig] = Field(
        default_factory=dict, description="per check name: threshold and/or action overrides"
    )
    recent_days: int = Field(
        1, ge=1, description="days up to the end of the run date whose item mix, user "
        "activity and new ids are profiled",
    )
    volume_days: int = Field(7, ge=1, description="days before the run date whose median "
                             "daily volume is the usual volume")
    window_runs: int = Field(7, ge=1, description="published runs pooled as the trailing "
                             "reference of the distribution checks")
    min_events: int = Field(
        5000, ge=1, description="a profiled window (this run's or a reference's) with fewer "
        "interactions and the distribution checks are skipped: sampling noise would dominate",
    )
    min_daily_events: int = Field(
        1000, ge=1, description="a usual day (median of volume_days) with fewer events and "
        "the volume checks are skipped",
    )
    min_type_events: int = Field(
        200, ge=1, description="an event type with a smaller usual daily volume is left out "
        "of type_volume_drop",
    )
    top_items: int = Field(
        50, ge=1, description="items of each side binned one by one in the popularity "
        "checks; the rest are pooled into one '(other)' bin",
    )
    smoothing: float = Field(
        0.5, gt=0.0, description="pseudo-count added to every bin on both sides, so a bin "
        "empty on one side has a finite log ratio",
    )
    keep_profiles: int = Field(30, ge=1, description="published runs' profiles kept in "
                               "ART/state/drift/profiles (at least window_runs are needed)")

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, DriftCheckConfig]) -> dict[str, DriftCheckConfig]:
        unknown = [n for n in value if n not in DEFAULT_DRIFT_CHECKS
                   and n.split(":", 1)[0] not in PER_NAME_CHECKS]
        if unknown:
            raise ValueError(f"unknown drift check(s) {sorted(unknown)}; checks are "
                             f"{', '.join(DEFAULT_DRIFT_CHECKS)}, quarantine_share:<reason> "
                             "and feature_psi_prev:<feature>")
        return value

    def check(self, name: str) -> ResolvedCheck:
        """The threshold and action of check `name` (a `quarantine_share:<reason>` falls
        back to `quarantine_share`), overrides applied onto the defaults."""
        base_name = name if name in DEFAULT_DRIFT_CHECKS else name.split(":", 1)[0]
        threshold, action = DEFAULT_DRIFT_CHECKS[base_name]
        for key in (base_name, name):
            override = self.checks.get(key)
            if override is not None:
                threshold = override.threshold if override.threshold is not None else threshold
                action = override.action or action
        return ResolvedCheck(threshold=threshold, action=action)


class RolloutConfig(_Frozen):
    """Guardrails of a canary rollout (`recsys rollout check`; docs/experiments.md). The rate
    limits are absolute increases of the canary over control (0.02 = 2 percentage points)."""

    max_error_rate_increase: float = Field(
        0.005, ge=0.0, le=1.0, description="requests answered after a model error (fallback "
        "reason containing 'error')",
    )
    max_fallback_rate_increase: float = Field(
        0.02, ge=0.0, le=1.0, description="requests answered by a fallback (any fallback_reason)"
    )
    max_p99_ratio: float = Field(1.5, ge=1.0, description="canary p99 latency / control p99")
    p99_slack_ms: float = Field(
        20.0, ge=0.0, description="a p99 within this many ms of control's never breaches: "
        "a ratio of two sub-millisecond tails is noise",
    )
    min_requests: int = Field(
        200, ge=1, description="requests each arm needs before the rate and latency guardrails "
        "are judged (3 fallbacks in 10 requests is not a rate)",
    )
    min_users: int = Field(
        500, ge=2, description="users each arm needs before CTR and play rate are tested, and "
        "before a promotion",
    )
    alpha: float = Field(
        0.01, gt=0.0, lt=0.5, description="one-sided level of 'canary CTR / play rate is worse'; "
        "strict because the check looks again every hour",
    )
    hold_hours: float = Field(
        24.0, ge=0.0, description="hours since the start the guardrails must have held before "
        "`check --auto-promote` promotes",
    )


class PipelineConfig(_Frozen):
    validation: ValidationConfig = ValidationConfig()
    events: EventsConfig = EventsConfig()
    split: SplitConfig = SplitConfig()
    als: AlsConfig = AlsConfig()
    index: IndexConfig = IndexConfig()
    candidates: CandidateConfig = CandidateConfig()
    ranker: RankerConfig = RankerConfig()
    publish: PublishConfig = PublishConfig()
    drift: DriftConfig = DriftConfig()
    rollout: RolloutConfig = RolloutConfig()
    spark_master: str = "local[*]"
    spark_driver_memory: str = "6g"
    shuffle_partitions: int = 4

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> PipelineConfig:
        data: dict[str, Any] = json.loads(path.read_text()) if path else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
