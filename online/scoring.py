"""Re-rank scorers: one small interface, two implementations.

`AlsDotScorer` needs nothing beyond the factors every bundle has. `OnnxScorer` runs the
bundle's int8 re-ranker (ranker/spec.json + the ONNX file) when the batch side ships one.
Both take the same `ScoreInput` and return one float32 score per candidate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.bundle import RANKER_SPEC as BUNDLE_RANKER_SPEC
from shared.errors import ModelError
from shared.onnx_session import create_session

log = logging.getLogger(__name__)

RANKER_SPEC = Path(BUNDLE_RANKER_SPEC)


@dataclass
class ScoreInput:
    bundle: Any  # online.bundle_loader.LoadedBundle (Any avoids an import cycle)
    user_idx: int | None
    user_vector: np.ndarray  # float32 [dim]: the user's factors or the mean of recent items
    recent_items: np.ndarray  # int32 item_idx from the request context
    region: str | None
    device: str | None
    candidates: np.ndarray  # int32 item_idx
    source_masks: np.ndarray  # uint32 per candidate, bits over candidate source names


class Scorer(Protocol):
    name: str

    def score(self, inputs: ScoreInput) -> np.ndarray: ...


class AlsDotScorer:
    name = "als-dot"

    def score(self, inputs: ScoreInput) -> np.ndarray:
        vectors = np.asarray(inputs.bundle.item_factors[inputs.candidates], dtype=np.float32)
        return vectors @ inputs.user_vector.astype(np.float32, copy=False)


FeatureFn = Callable[[ScoreInput, list[str]], np.ndarray]


class OnnxScorer:
    name = "onnx-int8"

    def __init__(self, model_path: Path, spec: dict[str, Any], features: FeatureFn) -> None:
        import onnxruntime as ort  # after the fork only: see PITFALLS

        # The project's one set of session options (shared/onnx_session.py): one thread
        # each, spinning off; workers x threads must not exceed the cores (PITFALLS, Serving).
        self._session = create_session(ort, model_path)
        # The batch side ships fp32 when int8 failed its parity check; say which one runs.
        self.name = "onnx-fp32" if "fp32" in str(spec["model"]) else "onnx-int8"
        self._input = str(spec.get("input", "features"))
        self._output = str(spec.get("output", "score"))
        self.feature_names = [str(f) for f in spec["features"]]
        self._features = features

    def score(self, inputs: ScoreInput) -> np.ndarray:
        try:
            x = self._features(inputs, self.feature_names)
            if x.shape != (len(inputs.candidates), len(self.feature_names)):
                raise ModelError(f"features shape {x.shape}")
            (out,) = self._session.run([self._output], {self._input: x})
            scores = np.asarray(out, dtype=np.float32).reshape(-1)
            if len(scores) != len(inputs.candidates) or not np.all(np.isfinite(scores)):
                raise ModelError("model returned a wrong-sized or non-finite output")
            return scores
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own hierarchy; any failure falls back
            raise ModelError(str(exc)) from exc


def load_scorer(bundle_dir: Path, features: FeatureFn | None = None) -> tuple[Scorer, str | None]:
    """The bundle's ONNX scorer if it ships a usable one, else ALS; plus why ONNX was not used.

    `features` defaults to RankerFeatures over the bundle (shared.features + candidates).

    A declared but unusable ranker degrades to the ALS dot product rather than refusing an
    otherwise verified bundle; the reason is logged and exported as a metric by the caller.
    """
    spec_path = bundle_dir / RANKER_SPEC
    if not spec_path.exists():
        return AlsDotScorer(), None
    try:
        spec = json.loads(spec_path.read_text())
        if features is None:
            from online.ranker_features import RankerFeatures
            from shared.features import FEATURE_NAMES

            # A model trained on other features than this code computes (version skew
            # between batch and service) must not be fed our columns.
            if tuple(spec["features"]) != FEATURE_NAMES:
                raise ValueError("spec features differ from shared.features.FEATURE_NAMES")
            features = RankerFeatures(bundle_dir)
        return OnnxScorer(spec_path.parent / spec["model"], spec, features), None
    except Exception as exc:  # import, JSON, missing key or ORT load error: same outcome
        log.error("ranker unusable, serving with als-dot", extra={"error": str(exc)})
        return AlsDotScorer(), f"ranker_unusable: {exc}"
