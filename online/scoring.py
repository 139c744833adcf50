"""Re-rank scorers: one small interface, two implementations.

`AlsDotScorer` needs nothing beyond the factors every bundle has. `OnnxScorer` runs the
bundle's int8 re-ranker (ranker/spec.json + the ONNX file) when the batch side ships one.
Both are built from the bundle they score for (`load_scorer(data)`) and hold what they read
from it, so a `ScoreInput` carries only the request: one float32 score per candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from online.ranker_features import RankerFeatures, feature_columns
from shared.bundle_layout import MODEL_FP32, MODEL_INT8
from shared.bundle_reader import BundleData
from shared.errors import ModelError
from shared.fusion import fused_scores, weight_vector
from shared.onnx_session import create_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreInput:
    user_idx: int | None
    user_vector: np.ndarray  # float32 [dim]: the user's factors or the mean of recent items
    recent_items: np.ndarray  # int32 item_idx from the request context
    region: str | None
    device: str | None
    candidates: np.ndarray  # int32 item_idx
    source_masks: np.ndarray  # uint32 per candidate (shared.sources bits)


class Scorer(Protocol):
    name: str

    def score(self, inputs: ScoreInput) -> np.ndarray: ...


class AlsDotScorer:
    name = "als-dot"

    def __init__(self, item_factors: np.ndarray) -> None:
        self._item_factors = item_factors

    def score(self, inputs: ScoreInput) -> np.ndarray:
        vectors = np.asarray(self._item_factors[inputs.candidates], dtype=np.float32)
        return vectors @ inputs.user_vector.astype(np.float32, copy=False)


FeatureFn = Callable[[ScoreInput, list[str]], np.ndarray]


class OnnxScorer:
    name = "onnx-int8"

    def __init__(self, model_path: Path, spec: dict[str, Any], features: FeatureFn) -> None:
        import onnxruntime as ort  # after the fork only: see PITFALLS

        # The project's one set of session options (shared/onnx_session.py): one thread
        # each, spinning off; workers x threads must not exceed the cores (PITFALLS, Serving).
        self.session = create_session(ort, model_path)
        # The batch side ships fp32 when int8 failed its parity check; say which one runs.
        self.name = "onnx-fp32" if "fp32" in str(spec["model"]) else "onnx-int8"
        self._input = str(spec.get("input", "features"))
        self._output = str(spec.get("output", "score"))
        self.feature_names = [str(f) for f in spec["features"]]
        self.features = features

    def score(self, inputs: ScoreInput) -> np.ndarray:
        return self.score_with_features(inputs)[1]

    def score_with_features(self, inputs: ScoreInput) -> tuple[np.ndarray, np.ndarray]:
        """(the feature matrix the model read, its scores): the skew monitor's sample
        (online/skew.py) is the matrix this request built anyway, never a second one."""
        try:
            x = self.features(inputs, self.feature_names)
            if x.shape != (len(inputs.candidates), len(self.feature_names)):
                raise ModelError(f"features shape {x.shape}")
            (out,) = self.session.run([self._output], {self._input: x})
            scores = np.asarray(out, dtype=np.float32).reshape(-1)
            if len(scores) != len(inputs.candidates) or not np.all(np.isfinite(scores)):
                raise ModelError("model returned a wrong-sized or non-finite output")
            return x, scores
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own hierarchy; any failure falls back
            raise ModelError(str(exc)) from exc


def load_scorer(data: BundleData, features: FeatureFn | None = None) -> tuple[Scorer, str | None]:
    """The bundle's ONNX scorer if it ships a usable one, else ALS; plus why ONNX was not used
    ("ranker_unusable: ..."; None when it was, or when the bundle ships no ranker).

    `features` defaults to RankerFeatures over the bundle (shared.features + candidates).

    A declared but unusable ranker degrades to the ALS dot product rather than refusing an
    otherwise verified bundle; the reason is logged and exported as a metric by the caller.
    """
    als = AlsDotScorer(data.item_factors)
    if data.ranker is None:
        return (als, None) if data.ranker_problem is None else _unusable(als, data.ranker_problem)
    spec = data.ranker.spec
    if spec.get("lists") == "fused" and isinstance(spec.get("fusion_weights"), dict):
        # The batch found the model's order worse than the fused order it re-ranks and
        # published the fused order: the service ranks the same way, not with the model.
        try:
            return FusedScorer(data, spec["fusion_weights"]), None
        except (TypeError, ValueError) as exc:
            return _unusable(als, f"fusion_weights: {exc}")
    try:
        if features is None:
            # A model trained on features this code does not compute (version skew between
            # batch and service) must not be fed other columns; one trained on a subset (a
            # bundle of the previous release, before a feature was added) is fed exactly
            # its columns, by name.
            feature_columns([str(f) for f in spec["features"]])
            features = RankerFeatures(data)
        return OnnxScorer(data.ranker.model, spec, features), None
    except Exception as exc:  # import, missing key, features or ORT load error: same outcome
        return _unusable(als, str(exc))


class FusedScorer:
    """The nightly run's fused order (shared.fusion: weighted reciprocal ranks of the batch
    sources, with the run's tuned weights), for a bundle whose spec says its lists are in
    that order. Items no batch source proposed for the user score 0 (they come after)."""

    name = "fused"

    def __init__(self, data: BundleData, weights: dict[str, Any]) -> None:
        self._data = data
        self._weights = weight_vector({str(k): float(v) for k, v in weights.items()})

    def score(self, inputs: ScoreInput) -> np.ndarray:
        _, ranks = self._data.candidate_sources(inputs.user_idx, inputs.candidates)
        if ranks is None:  # a user the batch never saw: no batch ranks at all
            return np.zeros(len(inputs.candidates), dtype=np.float32)
        return fused_scores(ranks, self._weights).astype(np.float32)


def _unusable(als: AlsDotScorer, why: str) -> tuple[Scorer, str]:
    log.error("ranker unusable, serving with als-dot", extra={"error": why})
    return als, f"ranker_unusable: {why}"


def scorer_variant(data: BundleData, name: str) -> Scorer:
    """A named scorer over `data` other than the one the bundle chose (an experiment arm's
    `scorer`); ValueError saying why when the bundle cannot run it. ONNX variants run the
    bundle's own model files (ranker/model.{int8,fp32}.onnx), checksummed with the rest."""
    if name == AlsDotScorer.name:
        return AlsDotScorer(data.item_factors)
    if data.ranker is None:
        raise ValueError(f"bundle {data.run_id} ships no ranker")
    spec = data.ranker.spec
    if name == FusedScorer.name:
        weights = spec.get("fusion_weights")
        if not isinstance(weights, dict):
            raise ValueError(f"bundle {data.run_id} ships no fusion weights")
        return FusedScorer(data, weights)
    models = {"onnx-int8": MODEL_INT8, "onnx-fp32": MODEL_FP32}
    if name not in models:
        raise ValueError(f"unknown scorer {name!r}")
    model = data.ranker.model.parent / models[name]
    if not model.exists():
        raise ValueError(f"bundle {data.run_id} ships no {models[name]}")
    feature_columns([str(f) for f in spec["features"]])
    return OnnxScorer(model, spec | {"model": models[name]}, RankerFeatures(data))
