"""Summary statistics of the re-ranker's features and scores, and PSI over fixed bins.

One file per bundle, `monitoring/feature_stats.json` (shared/bundle_layout.py), written by
the rank stage (batch/ranker/feature_stats.py) and read by the service's skew monitor
(online/skew.py), so the batch side and the service bin every value the same way:

    {"version": 1, "bins": 10, "quantiles": [0.01, ...],
     "edges": {"<feature>": [inner cut points], ..., "score": [...]},
     "samples": {"training":   {"rows": n, "features": {"<feature>": Summary}, "score": Summary},
                 "candidates": {...}}}

Summary = {rows, mean, std, p01..p99, null_share, default_share, counts}: `counts` are the
sample's counts over the feature's edges (see `bin_counts`), the reference a later sample is
compared with by PSI. The edges are the training sample's deciles (duplicates dropped: a
feature that is 0 for 80 % of rows has fewer, wider bins), so both sides of every comparison
use bins of one sample, and comparing two runs bins the newer run's values on the older
run's edges (batch) or live values on the bundle's edges (service).

numpy only: the service imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STATS_VERSION = 1
PSI_BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SCORE = "score"  # the model score's key among the features' (no feature has this name)
TRAINING, CANDIDATES = "training", "candidates"
SMOOTHING = 0.5  # pseudo-counts per bin on both sides, as the input drift checks use


def quantile_key(q: float) -> str:
    return f"p{round(q * 100):02d}"


def bin_edges(values: np.ndarray, bins: int = PSI_BINS) -> list[float]:
    """The inner cut points of `bins` quantile bins of the finite values (deduplicated)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return []
    cuts = np.quantile(v, np.arange(1, bins) / bins)
    return [float(c) for c in np.unique(cuts)]


def bin_counts(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts over len(edges) + 2 bins: (-inf, e0), [e0, e1), ..., [e_last, inf), then one
    bin for NaN / inf (a missing value is a distribution shift too)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(v)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), v[finite], side="right")
    out = np.bincount(idx, minlength=len(edges) + 2).astype(np.int64)
    out[len(edges) + 1] = int((~finite).sum())
    return out


def psi(current: np.ndarray, reference: np.ndarray, alpha: float = SMOOTHING) -> float:
    """Population stability index sum((q - p) ln(q / p)) in nats over smoothed shares (the
    same formula as batch/drift/stats.psi). 0.1-0.25 is a moderate shift, > 0.25 a major one."""
    q = np.asarray(current, dtype=np.float64) + alpha
    p = np.asarray(reference, dtype=np.float64) + alpha
    q, p = q / q.sum(), p / p.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def noise_floor(bins: int, n_current: float, n_reference: float) -> float:
    """PSI two samples of one distribution show from sampling alone (batch/drift/stats)."""
    return (bins - 1) * (1.0 / max(n_current, 1.0) + 1.0 / max(n_reference, 1.0))


def summarize(values: np.ndarray, edges: Sequence[float], default: float | None) -> dict[str, Any]:
    """One column's Summary (module doc); quantiles and moments over its finite values."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    n = len(v)
    out: dict[str, Any] = {"rows": n}
    if len(finite):
        out["mean"], out["std"] = float(finite.mean()), float(finite.std())
        for q, value in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True):
            out[quantile_key(q)] = float(value)
    else:
        out["mean"] = out["std"] = None
        out.update({quantile_key(q): None for q in QUANTILES})
    out["null_share"] = float((n - len(finite)) / n) if n else 0.0
    out["default_share"] = (float(np.mean(v == default)) if n and default is not None else None)
    out["counts"] = bin_counts(v, edges).tolist()
    return out


def sample_summary(x: np.ndarray, names: Sequence[str], edges: Mapping[str, Sequence[float]],
                   defaults: Mapping[str, float], scores: np.ndarray | None) -> dict[str, Any]:  # fmt: skip
    """A sample's Summary per feature (columns of x in `names` order) and of its scores."""
    x = np.asarray(x)
    out: dict[str, Any] = {"rows": int(x.shape[0]), "features": {
        name: summarize(x[:, j], edges[name], defaults.get(name)) for j, name in enumerate(names)
    }}
    if scores is not None:
        out[SCORE] = summarize(scores, edges[SCORE], None)
    return out


def build(training_x: np.ndarray, names: Sequence[str], defaults: Mapping[str, float],
          training_scores: np.ndarray | None = None, candidates_x: np.ndarray | None = None,
          candidate_scores: np.ndarray | None = None, bins: int = PSI_BINS) -> dict[str, Any]:  # fmt: skip
    """The feature_stats.json document: edges from the training sample, both samples' Summaries."""
    edges = {name: bin_edges(training_x[:, j], bins) for j, name in enumerate(names)}
    if training_scores is not None:
        edges[SCORE] = bin_edges(training_scores, bins)
    elif candidate_scores is not None:
        edges[SCORE] = bin_edges(candidate_scores, bins)
    samples = {TRAINING: sample_summary(training_x, names, edges, defaults, training_scores)}
    if candidates_x is not None:
        scores = candidate_scores if SCORE in edges else None
        samples[CANDIDATES] = sample_summary(candidates_x, names, edges, defaults, scores)
    return {"version": STATS_VERSION, "bins": bins, "quantiles": list(QUANTILES),
            "edges": edges, "samples": samples}  # fmt: skip


def psi_against(stats: Mapping[str, Any], sample: str, x: np.ndarray, names: Sequence[str],
                scores: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """PSI of each column of x (and of the scores) against `stats`' sample `sample`, binned
    on stats' edges: a feature (or the score) stats lacks is left out."""
    ref = stats["samples"][sample]
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        summary = ref["features"].get(name)
        if summary is not None and name in stats["edges"]:
            out[name] = psi(bin_counts(x[:, j], stats["edges"][name]), np.asarray(summary["counts"]))
    if scores is not None and SCORE in ref and SCORE in stats["edges"]:
        out[SCORE] = psi(bin_counts(scores, stats["edges"][SCORE]), np.asarray(ref[SCORE]["counts"]))
    return out


def load(path: Path) -> dict[str, Any]:
    """A feature_stats.json, checked for the keys its readers use (ValueError otherwise)."""
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("version") != STATS_VERSION:
        raise ValueError(f"{path.name}: not a version {STATS_VERSION} feature stats file")
    if not isinstance(doc.get("edges"), dict) or TRAINING not in doc.get("samples", {}):
        raise ValueError(f"{path.name}: no edges or no training sample")
    return doc
