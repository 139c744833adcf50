"""The batch side's ONNX scorer: one onnxruntime session per model.

The session comes from shared.onnx_session.create_session, as the service's does
(online/scoring.py): the same options everywhere. Both feed it
shared.features.compute_features, which is what keeps batch and online scores equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batch.ranker.model import INPUT_NAME, OUTPUT_NAME
from shared.onnx_session import create_session


class OnnxRanker:
    def __init__(self, model: Path | bytes) -> None:
        import onnxruntime as ort

        self.session = create_session(ort, model)

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        return np.asarray(out, dtype=np.float32).reshape(-1)
