"""The re-ranker network and its ONNX export.

A small MLP over the shared features. Standardisation (training mean and std) is a layer of
the model, so the ONNX file takes the raw features of shared/features.py and nothing else
has to be kept in sync. Layers are written as MatMul + Add (not nn.Linear, which exports as
Gemm) because onnxruntime's dynamic int8 quantization covers MatMul.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shared.bundle_layout import MODEL_FP32, MODEL_INT8

INPUT_NAME = "features"
OUTPUT_NAME = "score"
OPSET = 17


class Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight) + self.bias


class Ranker(nn.Module):
    """score = MLP((x - mean) / std); hidden=() gives a linear model."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = len(mean)
        for size in hidden:
            layers += [Dense(width, size), nn.ReLU()]
            width = size
        layers.append(Dense(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) * self.inv_std).squeeze(-1)


def export_onnx(model: Ranker, n_features: int, path: Path) -> None:
    """fp32 ONNX: input "features" float32 [N, F], output "score" float32 [N]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.zeros(2, n_features, dtype=torch.float32)
    # The TorchScript exporter: the dynamo one takes ~20 s here for the same graph.
    torch.onnx.export(
        model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}}, opset_version=OPSET,
        dynamo=False,
    )


# The exported files: the names the bundle ships them under (spec.json's "model").
FP32, INT8 = MODEL_FP32, MODEL_INT8


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties broken by position: scores here are continuous)."""
    if len(a) < 2:
        return 1.0
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])
