"""Assembling a bundle directory from the stage outputs (Arrow and numpy, no Spark).

This module collects what the stages wrote and hands it to shared.bundle_writer.BundleWriter,
which owns the bundle's file names and formats (shared/bundle_layout.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.context import RunContext
from batch.vectors import read_vectors
from shared.bundle_layout import RANKER_MODELS
from shared.bundle_writer import BundleWriter, CandidateChunks


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


def _factors(path: Path | str, rows: int) -> np.ndarray:
    ids, vecs = read_vectors(path)
    return _dense(ids, vecs, max(rows, int(ids.max(initial=-1)) + 1))


def _ranker(ctx: RunContext, writer: BundleWriter) -> None:
    """ranker/ (spec + both ONNX files) and features/ (the full variant's arrays, without
    the factors the bundle root already has) when the rank stage shipped a re-ranker."""
    spec = ctx.outputs.rank.ranker_spec
    if not spec.exists():
        return
    models = ctx.outputs.train_ranker.models
    writer.ranker(spec, {name: models / name for name in RANKER_MODELS})
    writer.feature_arrays(ctx.outputs.features.arrays("full"))
    if ctx.outputs.rank.feature_stats.exists():
        writer.feature_stats(ctx.outputs.rank.feature_stats)


def assemble(ctx: RunContext, target: Path) -> dict[str, int]:
    """Write every bundle file but the manifest into target; return row counts."""
    writer = BundleWriter(target)
    items = pq.read_table(ctx.outputs.embeddings.items).sort_by("item_idx")
    users = pq.read_table(ctx.outputs.embeddings.users).sort_by("user_idx")
    items = items.select(["item_idx", "item_id", "title", "genres", "available_regions"])
    users = users.select(["user_idx", "user_id", "region"])
    writer.items(items)
    writer.users(users)
    item_ids = _ids_by_idx(items, "item_idx", "item_id")
    user_ids = _ids_by_idx(users, "user_idx", "user_id")
    n_items, n_users = len(item_ids), len(user_ids)

    writer.factors(_factors(ctx.outputs.embeddings.item_factors("full"), n_items),
                   _factors(ctx.outputs.embeddings.user_factors("full"), n_users))
    writer.index(ctx.outputs.index.index("full"))

    seen = (
        pq.read_table(ctx.outputs.embeddings.interactions, columns=["user_idx", "item_idx"])
        .group_by(["user_idx", "item_idx"]).aggregate([])
        .sort_by([("user_idx", "ascending"), ("item_idx", "ascending")])
    )
    writer.seen(seen["user_idx"].to_numpy(), seen["item_idx"].to_numpy(), n_users)

    recs = pq.read_table(ctx.outputs.rank.recommendations("full")).sort_by(
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
    writer.recommendations(recs, n_users)
    # The full variant's candidate table, a row group at a time (it never fits in memory
    # whole). Its files come in a fixed order and each is sorted by (user, item), so reruns
    # write the same bytes.
    candidates = CandidateChunks.from_parquet(ctx.outputs.candidates.merged("full"))
    n_candidates = writer.candidates(candidates, n_users)
    popular = pq.read_table(ctx.outputs.candidates.popular("full")).sort_by(
        [("segment", "ascending"), ("rank", "ascending")]
    )
    popular = popular.append_column("item_id", _lookup(item_ids, popular["item_idx"]))
    writer.popular(popular.select(["segment", "rank", "item_idx", "item_id", "score"]))
    quarantine = pq.read_table(ctx.outputs.validate.quarantine)
    writer.quarantine(quarantine)
    writer.metrics(ctx.outputs.evaluate.metrics)
    _ranker(ctx, writer)
    writer.metrics_chart(ctx.outputs.evaluate.figure)
    return {
        "items": items.num_rows,
        "users": users.num_rows,
        "recommendations": recs.num_rows,
        "candidates": n_candidates,
        "popular": popular.num_rows,
        "quarantine": quarantine.num_rows,
        "seen_pairs": seen.num_rows,
    }
