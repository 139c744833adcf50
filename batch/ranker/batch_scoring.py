"""Scoring every user's candidates in Spark with the shipped ONNX model(s).

Each task loads the feature arrays (memory-mapped) and one onnxruntime session per model
once, then walks its partition user by user: rows arrive grouped by user (repartitioned
by user, sorted within partitions), and a user cut by an Arrow batch boundary is carried
over to the next batch, so every user is scored in one call, exactly as the service does.
The arrays are read from a path every executor sees (local here; shared storage or
SparkFiles on a cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, LongType, StructField, StructType

from batch.ranker.fingerprint import user_fingerprint
from shared.feature_arrays import load_feature_arrays
from shared.features import compute_features
from shared.sources import RANK_COLUMNS, SCORE_COLUMNS, SOURCES, bit


def source_matrices(pdf: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """[n, len(SOURCES)] scores and ranks from candidate columns, NaN where absent."""
    scores = pdf[list(SCORE_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)
    ranks = pdf[list(RANK_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)
    return scores, ranks


Scores = Mapping[str, np.ndarray]


class _LazyScores(Mapping[str, np.ndarray]):
    """Each model's scores of one user, computed on first access: an emitter that reuses
    the previous run's list (ranked_lists with `previous`) never runs the model."""

    def __init__(self, rankers: dict[str, object], x: np.ndarray) -> None:
        self._rankers, self._x = rankers, x
        self._done: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._done:
            self._done[name] = self._rankers[name].score(self._x)  # type: ignore[attr-defined]
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rankers)

    def __len__(self) -> int:
        return len(self._rankers)


_NUMPY_TYPES = {IntegerType: np.int32, LongType: np.int64}
# (user, its items, its slice of the extra columns, each model's scores, the features the
# models read) -> output columns
Emit = Callable[[int, np.ndarray, dict[str, np.ndarray], Scores, np.ndarray],
                dict[str, np.ndarray]]


def _scoring_job(candidates: DataFrame, features_dir: Path, models: dict[str, bytes],
                 partitions: int, extra_columns: dict[str, Column], emit: Emit,
                 schema: StructType) -> DataFrame:
    """Every user's candidates through compute_features and each model, one user per
    call; `emit` turns a scored user into output rows. Only numeric columns cross into
    Python, and a batch is converted to numpy once and cut at user boundaries: per-user
    pandas work would cost more than the features and the model together."""
    directory = str(features_dir)
    extra_names = list(extra_columns)  # the Columns themselves hold JVM handles: not shipped

    def score_users(pdf: pd.DataFrame, arrays: object, rankers: dict[str, object]) -> pd.DataFrame:
        users = pdf["user_idx"].to_numpy()
        items_all = pdf["item_idx"].to_numpy()
        scores_all, ranks_all = source_matrices(pdf)
        extra_all = {name: pdf[name].to_numpy() for name in extra_names}
        cuts = np.flatnonzero(np.diff(users)) + 1
        out: dict[str, list[np.ndarray]] = {field: [] for field in schema.names}
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(users)], strict=True):
            items = items_all[lo:hi]
            x = compute_features(arrays, int(users[lo]), items,  # type: ignore[arg-type]
                                 scores_all[lo:hi], ranks_all[lo:hi])
            got = emit(int(users[lo]), items, {k: v[lo:hi] for k, v in extra_all.items()},
                       _LazyScores(rankers, x), x)
            for field, values in got.items():
                out[field].append(values)
        return pd.DataFrame({
            field.name: np.concatenate(out[field.name]).astype(
                _NUMPY_TYPES.get(type(field.dataType), np.float32))
            for field in schema.fields
        })

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from batch.ranker.scorer import OnnxRanker

        arrays = load_feature_arrays(Path(directory))
        rankers = {n: OnnxRanker(models[n]) for n in sorted(models)}
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

    cols = [F.col(c) for c in ("user_idx", "item_idx", *SCORE_COLUMNS, *RANK_COLUMNS)]
    return (
        candidates.select(*cols, *[col.alias(name) for name, col in extra_columns.items()])
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

    def every_row(user: int, items: np.ndarray, extra: dict[str, np.ndarray],
                  scores: Scores, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"user_idx": np.full(items.size, user, np.int32), "item_idx": items,
                **{f"score_{n}": scores[n] for n in names}}

    return _scoring_job(candidates, features_dir, models, partitions, {}, every_row, schema)


_TOP_SCHEMA = StructType([
    StructField("user_idx", IntegerType(), False),
    StructField("item_idx", IntegerType(), False),
    StructField("score", FloatType(), False),
    StructField("rank", IntegerType(), False),
    StructField("source_bits", IntegerType(), False),
])
_FINGERPRINTED_SCHEMA = StructType([
    *_TOP_SCHEMA.fields,
    StructField("fp_hi", LongType(), False),
    StructField("fp_lo", LongType(), False),
])
REUSED_RANK = 0  # the one row of a user whose previous list is reused: rank 0, item -1


def _source_bits() -> Column:
    return sum(F.when(F.array_contains("sources", name), bit(name)).otherwise(0)
               for name in SOURCES)  # type: ignore[return-value]


def sources_list() -> Column:
    """The `sources` array column from a `source_bits` column (shared.sources bits)."""
    return F.filter(
        F.array(*[F.when((F.col("source_bits").bitwiseAND(bit(name))) > 0, F.lit(name))
                  for name in SOURCES]),
        lambda x: x.isNotNull(),
    )


def _top(user: int, items: np.ndarray, source_bits: np.ndarray, scores: Scores,
         top_k: int) -> dict[str, np.ndarray]:
    score = scores["model"].astype(np.float32)
    order = np.lexsort((items, -score))[:top_k]
    return {"user_idx": np.full(order.size, user, np.int32), "item_idx": items[order],
            "score": score[order], "rank": np.arange(1, order.size + 1, dtype=np.int32),
            "source_bits": source_bits[order]}


def ranked_lists(candidates: DataFrame, features_dir: Path, model: bytes, partitions: int,
                 top_k: int) -> DataFrame:
    """Each user's top_k by one model's score (descending, item id ascending on ties), with
    rank and the candidate's sources: the published lists, chosen inside the scoring task
    instead of ranking and re-joining every scored row in Spark. The sources travel as
    their shared.sources bits and become the list again in Spark."""

    def top(user: int, items: np.ndarray, extra: dict[str, np.ndarray],
            scores: Scores, x: np.ndarray) -> dict[str, np.ndarray]:
        return _top(user, items, extra["source_bits"], scores, top_k)

    lists = _scoring_job(candidates, features_dir, {"model": model}, partitions,
                         {"source_bits": _source_bits()}, top, _TOP_SCHEMA)
    return lists.select("user_idx", "item_idx", "score", "rank", sources_list().alias("sources"))


def fingerprinted_lists(candidates: DataFrame, features_dir: Path, model: bytes,
                        partitions: int, top_k: int,
                        previous: DataFrame | None) -> DataFrame:
    """ranked_lists plus each user's fingerprint of its model inputs (fp_hi, fp_lo:
    batch/ranker/fingerprint.py), computed in the task from the features it built anyway.

    `previous` (user_idx, fp_hi, fp_lo): the fingerprints of the run whose lists may be
    reused (same run key; the caller checks that). A user whose fingerprint equals its
    previous one is not scored: it gets a single row with rank REUSED_RANK (item -1), and
    the caller takes its list from that run. Rows keep `source_bits`; `sources_list()`
    turns them into the list column."""

    def top(user: int, items: np.ndarray, extra: dict[str, np.ndarray],
            scores: Scores, x: np.ndarray) -> dict[str, np.ndarray]:
        bits = extra["source_bits"]
        hi, lo = user_fingerprint(user, items, bits, x)
        if extra["has_prev"][0] and extra["prev_hi"][0] == hi and extra["prev_lo"][0] == lo:
            rows = {"user_idx": np.array([user], np.int32), "item_idx": np.array([-1], np.int32),
                    "score": np.zeros(1, np.float32),
                    "rank": np.array([REUSED_RANK], np.int32),
                    "source_bits": np.zeros(1, np.int32)}
        else:
            rows = _top(user, items, bits, scores, top_k)
        n = rows["user_idx"].size
        return {**rows, "fp_hi": np.full(n, hi, np.int64), "fp_lo": np.full(n, lo, np.int64)}

    if previous is None:  # no run to reuse from: every user is scored
        previous = candidates.sparkSession.createDataFrame(
            [], "user_idx int, fp_hi long, fp_lo long")
    # A few tens of bytes per user (8 MB at 400k users): broadcast, so the candidates are
    # shuffled once, by the scoring job's own repartition.
    prev = F.broadcast(previous.select(
        "user_idx", F.col("fp_hi").alias("prev_hi"), F.col("fp_lo").alias("prev_lo")))
    # Non-null int64 on the Python side: a null would turn the column into float64 there.
    with_prev = candidates.join(prev, "user_idx", "left").select(
        *candidates.columns,
        F.col("prev_hi").isNotNull().cast("int").alias("has_prev"),
        F.coalesce("prev_hi", F.lit(0).cast("long")).alias("prev_hi"),
        F.coalesce("prev_lo", F.lit(0).cast("long")).alias("prev_lo"),
    )
    extra = {"source_bits": _source_bits(), "has_prev": F.col("has_prev"),
             "prev_hi": F.col("prev_hi"), "prev_lo": F.col("prev_lo")}
    return _scoring_job(with_prev, features_dir, {"model": model}, partitions, extra, top,
                        _FINGERPRINTED_SCHEMA)


def scored_features(candidates: DataFrame, features_dir: Path, model: bytes,
                    partitions: int) -> DataFrame:
    """(user_idx, score, f0..f{n-1}): every candidate's features as the model read them and
    its score, for the feature statistics of the candidates as scored (batch/ranker/
    feature_stats.py); the caller samples users first, this keeps every row of each."""
    from shared.features import N_FEATURES

    schema = StructType(
        [StructField("user_idx", IntegerType(), False), StructField("score", FloatType(), False)]
        + [StructField(f"f{j}", FloatType(), False) for j in range(N_FEATURES)]
    )

    def rows(user: int, items: np.ndarray, extra: dict[str, np.ndarray],
             scores: Scores, x: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        return {"user_idx": np.full(items.size, user, np.int32), "score": scores["model"],
                **{f"f{j}": x[:, j] for j in range(N_FEATURES)}}

    return _scoring_job(candidates, features_dir, {"model": model}, partitions, {}, rows, schema)
