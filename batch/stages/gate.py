"""The quality gate: refuse to publish a run that is worse than the popularity baseline,
worse than the best single candidate source, below an absolute floor, or sharply worse
than the last published run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.context import RunContext, read_json, write_json
from shared.bundle import current_bundle, load_manifest, read_current
from shared.config import PublishConfig
from shared.errors import BundleError, QualityGateFailed
from shared.sources import SOURCES


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    checked: dict[str, float]


def decide(metrics: dict[str, Any], previous: dict[str, Any] | None, config: PublishConfig) -> GateDecision:
    name = config.gate_metric
    ours = float(metrics["lists"]["merged"][name])
    baseline = float(metrics["lists"]["popularity"][name])
    checked = {"value": ours, "popularity": baseline, "min_value": config.min_value}
    reasons = []
    if ours <= baseline:
        reasons.append(f"{name} {ours:.4f} is not above the popularity baseline {baseline:.4f}")
    # Each candidate source is evaluated alone as well (batch/stages/evaluate.py).
    sources = {s: float(metrics["lists"][s][name]) for s in SOURCES if s in metrics["lists"]}
    if sources:
        # The point of merging and re-ranking: never publish lists worse than one source alone.
        best = max(sources, key=lambda s: sources[s])
        checked["best_source"] = sources[best]
        floor = sources[best] * (1 - config.max_drop_vs_best_source)
        if ours < floor:
            reasons.append(
                f"{name} {ours:.4f} is below the best single source ({best}, {sources[best]:.4f})"
            )
    if ours < config.min_value:
        reasons.append(f"{name} {ours:.4f} is below the configured floor {config.min_value:.4f}")
    if previous is not None:
        before = float(previous["lists"]["merged"][name])
        checked["previous"] = before
        if before > 0 and (before - ours) / before > config.max_relative_drop:
            reasons.append(
                f"{name} dropped from {before:.4f} (last published run) to {ours:.4f}, more than "
                f"{config.max_relative_drop:.0%}"
            )
    return GateDecision(passed=not reasons, reasons=reasons, checked=checked)


def _previous_metrics(artifacts: Path) -> dict[str, Any] | None:
    if read_current(artifacts) is None:
        return None
    try:
        return load_manifest(current_bundle(artifacts)).metrics
    except BundleError:
        return None


def run(ctx: RunContext) -> dict[str, object]:
    metrics = read_json(ctx.outputs.evaluate.metrics)
    decision = decide(metrics, _previous_metrics(ctx.artifacts), ctx.config.publish)
    write_json(
        ctx.outputs.gate.decision,
        {"passed": decision.passed, "reasons": decision.reasons, "checked": decision.checked},
    )
    if not decision.passed:
        raise QualityGateFailed("quality gate refused to publish: " + "; ".join(decision.reasons))
    return {"passed": True, "checked": decision.checked}
