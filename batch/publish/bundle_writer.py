"""Assembling a bundle directory from the stage outputs (Arrow and numpy, no Spark)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.context import RunContext
from batch.vectors import read_vectors
from shared import candidate_arrays
from shared.bundle import FEATURES_DIR, RANKER_DIR, RANKER_SPEC
from shared.features import ARRAY_NAMES
from shared.recommendation_arrays import write_recommendation_arrays


def _dense(ids: np.ndarray, vectors: np.ndarray, size: int) -> np.ndarray:
    """Rows addressed by stable idx; ids absent from this run stay zero."""
    out = np.zeros((size, vectors.shape[1]), dtype=np.float32)
    out[ids] = vectors
    return out


def _lookup(ids_by_idx: pa.Array, idx: pa.ChunkedArray) -> pa.Array:
    return pc.take(ids_by_idx, idx.combine_chunks().cast(pa.int64()))


def _ids_by_idx(table: pa.Table, idx_col: str, id_col: str) -> pa.Array:
    size = int(pc.max(table[idx_col]).as_py()) + 1 if table.num_rows else 0
    ids = [None] * size
    for i, v in zip(table[idx_col].to_pylist(), table[id_col].to_pylist(), strict=True):
        ids[i] = v
    return pa.array(ids, type=pa.string())


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def _user_columns(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        reader = pq.ParquetFile(path)
        for group in range(reader.num_row_groups):
            yield reader.read_row_group(group, columns=["user_idx"])["user_idx"].to_numpy()


def _write_candidates(source: Path, target: Path, n_users: int) -> int:
    """The full variant's candidate table into the bundle twice, a row group at a time:
    candidates.parquet for analysts and the per-user arrays the service memory-maps
    (shared/candidate_arrays.py). The table is the bundle's largest (126M rows at 20M
    events) and never fits in memory whole. Its files come in a fixed order and
    each is sorted by (user, item), so reruns write the same bytes."""
    files = sorted(source.glob("part-*.parquet")) if source.is_dir() else [source]
    counts = candidate_arrays.rows_per_user(_user_columns(files), n_users)
    arrays = candidate_arrays.CandidateArrayWriter(target, counts)
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for path in files:
            reader = pq.ParquetFile(path)
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(target / "candidates.parquet", table.schema,
                                              compression="zstd")
                writer.write_table(table.cast(writer.schema))
                arrays.add(table)
                rows += table.num_rows
        if writer is None:  # no rows at all: an empty file with the stage's schema
            pq.write_table(pq.read_table(source), target / "candidates.parquet", compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    arrays.close()
    return rows


def _copy_ranker(ctx: RunContext, target: Path) -> None:
    """ranker/ (spec + both ONNX files) and features/ (the full variant's arrays, without
    the factors the bundle root already has) when the rank stage shipped a re-ranker."""
    spec = ctx.stage_dir("rank") / "ranker_spec.json"
    if not spec.exists():
        return
    ranker = target / RANKER_DIR
    ranker.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec, target / RANKER_SPEC)
    for name in ("model.fp32.onnx", "model.int8.onnx"):
        shutil.copyfile(ctx.stage_dir("train_ranker") / "ranker" / name, ranker / name)
    features = target / FEATURES_DIR
    features.mkdir(parents=True, exist_ok=True)
    for name in ARRAY_NAMES:
        shutil.copyfile(ctx.stage_dir("features") / "full" / f"{name}.npy", features / f"{name}.npy")


def assemble(ctx: RunContext, target: Path) -> dict[str, int]:
    """Write every bundle file (see shared/bundle.py) into target; return row counts."""
    target.mkdir(parents=True, exist_ok=True)
    items = pq.read_table(ctx.path("embeddings", "items.parquet")).sort_by("item_idx")
    users = pq.read_table(ctx.path("embeddings", "users.parquet")).sort_by("user_idx")
    items = items.select(["item_idx", "item_id", "title", "genres", "available_regions"])
    users = users.select(["user_idx", "user_id", "region"])
    _write(items, target / "items.parquet")
    _write(users, target / "users.parquet")
    item_ids = _ids_by_idx(items, "item_idx", "item_id")
    user_ids = _ids_by_idx(users, "user_idx", "user_id")
    n_items, n_users = len(item_ids), len(user_ids)

    ids, vecs = read_vectors(ctx.path("embeddings", "full/item_factors.parquet"))
    np.save(target / "item_factors.npy", _dense(ids, vecs, max(n_items, int(ids.max(initial=-1)) + 1)))
    ids, vecs = read_vectors(ctx.path("embeddings", "full/user_factors.parquet"))
    np.save(target / "user_factors.npy", _dense(ids, vecs, max(n_users, int(ids.max(initial=-1)) + 1)))
    shutil.copyfile(ctx.stage_dir("index") / "index-full.faiss", target / "index.faiss")

    seen = (
        pq.read_table(ctx.path("embeddings", "interactions.parquet"), columns=["user_idx", "item_idx"])
        .group_by(["user_idx", "item_idx"]).aggregate([])
        .sort_by([("user_idx", "ascending"), ("item_idx", "ascending")])
    )
    counts = np.bincount(seen["user_idx"].to_numpy(), minlength=n_users)
    np.save(target / "seen_indptr.npy", np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    np.save(target / "seen_indices.npy", seen["item_idx"].to_numpy().astype(np.int32))

    recs = pq.read_table(ctx.path("rank", "full/recommendations.parquet")).sort_by(
        [("user_idx", "ascending"), ("rank", "ascending")]
    )
    recs = pa.table(
        {
            "user_idx": recs["user_idx"],
            "user_id": _lookup(user_ids, recs["user_idx"]),
            "rank": recs["rank"],
            "item_idx": recs["item_idx"],
            "item_id": _lookup(item_ids, recs["item_idx"]),
            "score": recs["score"],
            "sources": recs["sources"],
        }
    )
    _write(recs, target / "recommendations.parquet")
    write_recommendation_arrays(recs, target, n_users)
    n_candidates = _write_candidates(
        Path(ctx.path("candidates", "full/candidates.parquet")), target, n_users
    )
    popular = pq.read_table(ctx.path("candidates", "full/popular.parquet")).sort_by(
        [("segment", "ascending"), ("rank", "ascending")]
    )
    popular = popular.append_column("item_id", _lookup(item_ids, popular["item_idx"]))
    _write(popular.select(["segment", "rank", "item_idx", "item_id", "score"]), target / "popular.parquet")
    quarantine = pq.read_table(ctx.path("validate", "quarantine.parquet"))
    _write(quarantine, target / "quarantine.parquet")
    shutil.copyfile(ctx.stage_dir("evaluate") / "metrics.json", target / "metrics.json")
    _copy_ranker(ctx, target)
    shutil.copyfile(ctx.stage_dir("evaluate") / "metrics.png", target / "metrics.png")
    return {
        "items": items.num_rows,
        "users": users.num_rows,
        "recommendations": recs.num_rows,
        "candidates": n_candidates,
        "popular": popular.num_rows,
        "quarantine": quarantine.num_rows,
        "seen_pairs": seen.num_rows,
    }
