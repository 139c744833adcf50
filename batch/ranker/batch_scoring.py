"""Scoring every user's candidates in Spark with the shipped ONNX model(s).

Each task loads the feature arrays (memory-mapped) and one onnxruntime session per model
once, then walks its partition user by user: rows arrive grouped by user (repartitioned
by user, sorted within partitions), and a user cut by an Arrow batch boundary is carried
over to the next batch, so every user is scored in one call, exactly as the service does.
The arrays are read from a path every executor sees (local here; shared storage or
SparkFiles on a cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

from shared.features import SOURCES, compute_features, load_feature_arrays


def source_matrices(pdf: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """[n, len(SOURCES)] scores and ranks from candidate columns, NaN where absent."""
    scores = pdf[[f"score_{s}" for s in SOURCES]].to_numpy(dtype=np.float64, na_value=np.nan)
    ranks = pdf[[f"rank_{s}" for s in SOURCES]].to_numpy(dtype=np.float64, na_value=np.nan)
    return scores, ranks


Scores = dict[str, np.ndarray]
# (one user's candidate rows, their items, each model's scores) -> output columns
Emit = Callable[[pd.DataFrame, np.ndarray, Scores], dict[str, np.ndarray | list[Any]]]


def _scoring_job(candidates: DataFrame, features_dir: Path, models: dict[str, bytes],
                 partitions: int, extra_columns: list[str], emit: Emit,
                 schema: StructType) -> DataFrame:
    """Every user's candidates through compute_features and each model, one user per
    call; `emit` turns a scored user into output rows."""
    names = sorted(models)
    directory = str(features_dir)

    def score_users(pdf: pd.DataFrame, arrays: object, rankers: dict[str, object]) -> pd.DataFrame:
        out: dict[str, list[Any]] = {field: [] for field in schema.names}
        for user, group in pdf.groupby("user_idx", sort=True):
            scores, ranks = source_matrices(group)
            items = group["item_idx"].to_numpy()
            x = compute_features(arrays, int(user), items, scores, ranks)  # type: ignore[arg-type]
            got = emit(group, items, {n: rankers[n].score(x) for n in names})  # type: ignore[attr-defined]
            for field, values in got.items():
                if field == "sources":
                    out[field].extend(values)
                else:
                    out[field].append(values)
        columns = {}
        for field in schema.fields:
            values = out[field.name]
            if field.name == "sources":
                columns[field.name] = values
            else:
                dtype = np.int32 if isinstance(field.dataType, IntegerType) else np.float32
                columns[field.name] = (np.concatenate(values) if values else np.zeros(0)).astype(dtype)
        return pd.DataFrame(columns)

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

    cols = ["user_idx", "item_idx", *[f"score_{s}" for s in SOURCES],
            *[f"rank_{s}" for s in SOURCES], *extra_columns]
    return (
        candidates.select(*cols)
        .repartition(partitions, "user_idx")
        .sortWithinPartitions("user_idx", "item_idx")
        .mapInPandas(run, schema)
    )


def score_candidates(candidates: DataFrame, features_dir: Path, models: dict[str, bytes],
                     partitions: int) -> DataFrame:
    """candidates(user_idx, item_idx, score_<src>, rank_<src>) ->
    (user_idx, item_idx, score_<model> for each model name): every candidate's scores."""
    names = sorted(models)
    schema = StructType(
        [StructField("user_idx", IntegerType(), False), StructField("item_idx", IntegerType(), False)]
        + [StructField(f"score_{n}", FloatType(), False) for n in names]
    )

    def every_row(group: pd.DataFrame, items: np.ndarray, scores: Scores) -> dict[str, Any]:
        return {"user_idx": group["user_idx"].to_numpy(np.int32), "item_idx": items,
                **{f"score_{n}": scores[n] for n in names}}

    return _scoring_job(candidates, features_dir, models, partitions, [], every_row, schema)


LIST_SCHEMA = StructType([
    StructField("user_idx", IntegerType(), False),
    StructField("item_idx", IntegerType(), False),
    StructField("score", FloatType(), False),
    StructField("rank", IntegerType(), False),
    StructField("sources", ArrayType(StringType(), False), False),
])


def ranked_lists(candidates: DataFrame, features_dir: Path, model: bytes, partitions: int,
                 top_k: int) -> DataFrame:
    """Each user's top_k by one model's score (descending, item id ascending on ties), with
    rank and the candidate's sources: the published lists, chosen inside the scoring task
    instead of ranking and re-joining every scored row in Spark."""

    def top(group: pd.DataFrame, items: np.ndarray, scores: Scores) -> dict[str, Any]:
        score = scores["model"].astype(np.float32)
        order = np.lexsort((items, -score))[:top_k]
        sources = group["sources"].to_numpy()
        return {"user_idx": np.full(order.size, group["user_idx"].iloc[0], np.int32),
                "item_idx": items[order], "score": score[order],
                "rank": np.arange(1, order.size + 1, dtype=np.int32),
                "sources": [list(sources[i]) for i in order]}

    return _scoring_job(candidates, features_dir, {"model": model}, partitions, ["sources"],
                        top, LIST_SCHEMA)
