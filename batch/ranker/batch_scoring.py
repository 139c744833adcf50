"""Scoring every user's candidates in Spark with the shipped ONNX model(s).

Each task loads the feature arrays (memory-mapped) and one onnxruntime session per model
once, then walks its partition user by user: rows arrive grouped by user (repartitioned
by user, sorted within partitions), and a user cut by an Arrow batch boundary is carried
over to the next batch, so every user is scored in one call, exactly as the service does.
The arrays are read from a path every executor sees (local here; shared storage or
SparkFiles on a cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

from shared.features import SOURCES, compute_features, load_feature_arrays


def source_matrices(pdf: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """[n, len(SOURCES)] scores and ranks from candidate columns, NaN where absent."""
    scores = pdf[[f"score_{s}" for s in SOURCES]].to_numpy(dtype=np.float64, na_value=np.nan)
    ranks = pdf[[f"rank_{s}" for s in SOURCES]].to_numpy(dtype=np.float64, na_value=np.nan)
    return scores, ranks


def score_candidates(candidates: DataFrame, features_dir: Path, models: dict[str, bytes],
                     partitions: int) -> DataFrame:
    """candidates(user_idx, item_idx, score_<src>, rank_<src>) ->
    (user_idx, item_idx, score_<model> for each model name)."""
    names = sorted(models)
    schema = StructType(
        [StructField("user_idx", IntegerType(), False), StructField("item_idx", IntegerType(), False)]
        + [StructField(f"score_{n}", FloatType(), False) for n in names]
    )
    directory = str(features_dir)

    def score_users(pdf: pd.DataFrame, arrays: object, rankers: dict[str, object]) -> pd.DataFrame:
        out = {"user_idx": [], "item_idx": [], **{n: [] for n in names}}  # type: dict[str, list]
        for user, group in pdf.groupby("user_idx", sort=True):
            scores, ranks = source_matrices(group)
            items = group["item_idx"].to_numpy()
            x = compute_features(arrays, int(user), items, scores, ranks)  # type: ignore[arg-type]
            out["user_idx"].append(group["user_idx"].to_numpy(np.int32))
            out["item_idx"].append(items.astype(np.int32))
            for n in names:
                out[n].append(rankers[n].score(x))  # type: ignore[attr-defined]
        cols = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
        return pd.DataFrame({"user_idx": cols["user_idx"].astype(np.int32),
                             "item_idx": cols["item_idx"].astype(np.int32),
                             **{f"score_{n}": cols[n].astype(np.float32) for n in names}})

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from batch.ranker.scorer import OnnxRanker

        arrays = load_feature_arrays(Path(directory))
        rankers = {n: OnnxRanker(models[n]) for n in names}
        carry: pd.DataFrame | None = None
        for pdf in batches:
            if carry is not None:
                pdf = pd.concat([carry, pdf], ignore_index=True)
            if pdf.empty:
                continue
            last = pdf["user_idx"].iloc[-1]
            carry = pdf[pdf["user_idx"] == last]
            done = pdf[pdf["user_idx"] != last]
            if len(done):
                yield score_users(done, arrays, rankers)
        if carry is not None and len(carry):
            yield score_users(carry, arrays, rankers)

    cols = ["user_idx", "item_idx", *[f"score_{s}" for s in SOURCES], *[f"rank_{s}" for s in SOURCES]]
    return (
        candidates.select(*cols)
        .repartition(partitions, "user_idx")
        .sortWithinPartitions("user_idx", "item_idx")
        .mapInPandas(run, schema)
    )
