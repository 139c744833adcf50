"""int8 versions of the fp32 ONNX re-ranker, both ways onnxruntime offers.

dynamic: int8 weights, activations quantized per call from their observed range.
static:  QDQ, activation ranges calibrated once on training features (MinMax).
Which one ships is decided by measured ranking quality (stage.py), not assumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batch.ranker.model import INPUT_NAME


def quantize_dynamic(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over fixed batches of features."""

    def __init__(self, x: np.ndarray, batch: int = 512) -> None:
        self._batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {INPUT_NAME: np.ascontiguousarray(self._batches[self._i - 1], np.float32)}

    def rewind(self) -> None:
        self._i = 0


def quantize_static(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    quantize_static(
        str(fp32), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, per_channel=False,
    )


def calibration_sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded subset of training rows: enough for MinMax ranges, cheap to run."""
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]
