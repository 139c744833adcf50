"""Feature drift, batch side: the statistics of every re-ranker feature and of the model
score, for the training sample and for the published candidates as scored, written to the
bundle (monitoring/feature_stats.json, shared/feature_stats.py) and compared with the last
published run's as drift checks (docs/monitoring.md, "Feature drift").

The training sample is a seeded subset of the features stage's sample (the rows the model
learnt from), scored by the shipped model on the driver. The candidates are every candidate
of a deterministic sample of users of the full variant (`ranker.stats_users`, by a hash of
user_idx), featurised and scored in Spark by the same job that writes the published lists
(batch_scoring.scored_features), then collected: a few hundred thousand rows at most.

Checks (recorded into the drift report the drift stage wrote, so they reach the manifest's
`extra.drift` and the warehouse's `drift` table like the input checks):
  feature_psi_prev:<feature>  candidates vs the previous published run's candidates, on its
                              edges, above the noise floor (warn at 0.2)
  score_psi_prev              the same for the model score (warn at 0.2)
  feature_psi_train:<feature> candidates vs this run's training sample (off: they differ by
                              construction, sampled negatives and positives; recorded only)
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from batch.context import RunContext, read_json, write_json
from batch.drift import checks as drift_checks
from batch.drift import store as drift_store
from batch.drift.checks import CheckResult
from batch.ranker.batch_scoring import scored_features
from batch.ranker.scorer import OnnxRanker
from batch.ranker.train import TrainingData
from shared import bundle_layout as layout
from shared import feature_stats as fs
from shared.bundle import read_current, run_dir
from shared.config import DriftConfig
from shared.features import FEATURE_NAMES, FEATURES

log = logging.getLogger(__name__)
DEFAULTS = {f.name: f.default for f in FEATURES}
_HASH_BUCKETS = 1_000_000


def candidate_sample(candidates: DataFrame, features_dir: Path, model: bytes, partitions: int,
                     users: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(x [rows, N_FEATURES], scores [rows]) of every candidate of about `users` users,
    chosen by a hash of user_idx (the same users on every rerun)."""
    n_users = candidates.select("user_idx").distinct().count()
    keep = min(1.0, users / max(n_users, 1))
    bucket = F.pmod(F.xxhash64("user_idx"), F.lit(_HASH_BUCKETS))
    chosen = candidates.where(bucket < int(keep * _HASH_BUCKETS))
    pdf = scored_features(chosen, features_dir, model, partitions).toPandas()
    columns = [f"f{j}" for j in range(len(FEATURE_NAMES))]
    # A fixed row order: float sums (the means) then give the same bytes on every rerun.
    pdf = pdf.sort_values(["user_idx", "score", *columns], ignore_index=True)
    x = pdf[columns].to_numpy(dtype=np.float32)
    return x, pdf["score"].to_numpy(dtype=np.float32)


def training_sample(path: Path, model: bytes, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of the training sample's rows and the shipped model's scores."""
    x = TrainingData.load(path).x
    if len(x) > rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]
    x = np.asarray(x, dtype=np.float32)
    return x, OnnxRanker(model).score(x).astype(np.float32)


def previous_stats(artifacts: Path, run_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The live bundle's feature stats (the last published run), unless it is this run."""
    live = read_current(artifacts)
    if live is None or live == run_id:
        return live, None
    path = run_dir(artifacts, live) / layout.FEATURE_STATS
    try:
        return live, fs.load(path) if path.exists() else None
    except (OSError, ValueError) as exc:
        log.warning("feature stats of %s unreadable, no comparison: %s", live, exc)
        return live, None


def drift_results(stats: dict[str, Any], x: np.ndarray, scores: np.ndarray,
                  previous: dict[str, Any] | None, previous_run: str | None,
                  cfg: DriftConfig) -> list[CheckResult]:  # fmt: skip
    """The feature drift checks of this run's candidates (module doc)."""
    b = drift_checks.CheckBuilder(cfg)
    n = len(x)
    cand = stats["samples"].get(fs.CANDIDATES)
    train = stats["samples"][fs.TRAINING]
    if cand is not None:
        for name in FEATURE_NAMES:
            counts = np.asarray(cand["features"][name]["counts"], dtype=np.float64)
            ref = np.asarray(train["features"][name]["counts"], dtype=np.float64)
            raw = fs.psi(counts, ref)
            floor = fs.noise_floor(len(counts), n, ref.sum())
            b.value(f"feature_psi_train:{name}", max(0.0, raw - floor),
                    f"candidates {n} rows vs training {int(ref.sum())} rows; raw PSI {raw:.4f}, "
                    f"noise floor {floor:.4f}")  # fmt: skip
    names = [*(f"feature_psi_prev:{name}" for name in FEATURE_NAMES), "score_psi_prev"]
    if previous is None or fs.CANDIDATES not in previous["samples"]:
        why = ("first run: no previous published run" if previous_run is None else
               f"previous run {previous_run} has no candidate feature statistics")
        for name in names:
            b.skip(name, why)
        return b.results
    ref_rows = float(previous["samples"][fs.CANDIDATES]["rows"])
    psis = fs.psi_against(previous, fs.CANDIDATES, x, FEATURE_NAMES, scores)
    for name, check in zip([*FEATURE_NAMES, fs.SCORE], names, strict=True):
        if name not in psis:
            b.skip(check, f"{previous_run} has no statistics of {name}")
            continue
        bins = len(previous["edges"][name]) + 2
        floor = fs.noise_floor(bins, n, ref_rows)
        b.value(check, max(0.0, psis[name] - floor),
                f"{n} vs {int(ref_rows)} candidate rows ({previous_run}), {bins} bins on its "
                f"edges; raw PSI {psis[name]:.4f}, noise floor {floor:.4f}")  # fmt: skip
    return b.results


def record(ctx: RunContext, results: list[CheckResult]) -> dict[str, Any]:
    """Append the checks to this run's drift report (replacing earlier feature checks of a
    rerun) and to ART/history/drift.parquet; returns the report."""
    path = ctx.outputs.drift.report
    report = read_json(path) if path.exists() else {"checks": [], "notes": []}
    ours = {r.check for r in results}
    kept = [c for c in report.get("checks", []) if c["check"] not in ours
            and not c["check"].startswith(("feature_psi_", "score_psi_"))]
    report["checks"] = kept + [asdict(r) for r in results]
    report["warnings"] = [c["check"] for c in report["checks"] if c["status"] == drift_checks.WARN]
    report["failures"] = [c["check"] for c in report["checks"] if c["status"] == drift_checks.FAIL]
    write_json(path, report)
    if "run_id" in report:
        drift_store.merge_history(ctx.artifacts,
                                  drift_store.report_rows(report, ctx.run_date.isoformat()))
    for r in results:
        if r.status == drift_checks.WARN:
            log.warning("%s", r.message())
    return report


def write(ctx: RunContext, run_id: str, model: bytes, candidates: DataFrame) -> dict[str, Any]:
    """Compute, write (rank/feature_stats.json) and check this run's feature statistics;
    returns the summary the manifest records."""
    cfg, out = ctx.config.ranker, ctx.outputs.rank
    train_x, train_scores = training_sample(ctx.outputs.features.train_sample, model,
                                            cfg.stats_training_rows, cfg.seed)  # fmt: skip
    cand_x, cand_scores = candidate_sample(candidates, ctx.outputs.features.arrays("full"), model,
                                           ctx.config.shuffle_partitions, cfg.stats_users)  # fmt: skip
    stats = fs.build(train_x, FEATURE_NAMES, DEFAULTS, train_scores, cand_x, cand_scores)
    write_json(out.feature_stats, stats)
    previous_run, previous = previous_stats(ctx.artifacts, run_id)
    results = drift_results(stats, cand_x, cand_scores, previous, previous_run, ctx.config.drift)
    record(ctx, results)
    warned = [r.check for r in results if r.status == drift_checks.WARN]
    return {"file": layout.FEATURE_STATS, "training_rows": len(train_x),
            "candidate_rows": len(cand_x), "compared_with": previous_run if previous else None,
            "checks": len(results), "warnings": warned}  # fmt: skip
