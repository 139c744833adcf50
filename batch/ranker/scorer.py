"""The batch side's ONNX scorer: one single-threaded onnxruntime session per model.

The service has its own (online/scoring.py) with the same session options; both feed it
shared.features.compute_features, which is what keeps batch and online scores equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batch.ranker.model import INPUT_NAME, OUTPUT_NAME


class OnnxRanker:
    def __init__(self, model: Path | bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: Spark already runs one task per core (and so does the service).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        return np.asarray(out, dtype=np.float32).reshape(-1)
