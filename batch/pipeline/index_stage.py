"""Stage 5 driver: read item vectors written by the embeddings stage, build and save the
FAISS index of each variant, and record its recall@100 against exact search."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from batch.pipeline import ann_index
from batch.pipeline.context import MODEL_VARIANTS, RunContext, write_json


def read_vectors(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n], vectors float32 [n, d]) from a (idx, vector) Parquet directory."""
    table = pq.read_table(path)
    id_col = table.column(0).to_numpy().astype(np.int64)
    flat = table.column("vector").combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    vectors = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return id_col, np.ascontiguousarray(vectors.reshape(len(id_col), dim))


def stage_index(ctx: RunContext) -> dict[str, object]:
    cfg = ctx.config.index
    out = ctx.stage_dir("index")
    report: dict[str, object] = {}
    for variant in MODEL_VARIANTS:
        ids, vectors = read_vectors(ctx.path("embeddings", f"{variant}/item_factors.parquet"))
        built = ann_index.build_index(ids, vectors, cfg)
        _, users = read_vectors(ctx.path("embeddings", f"{variant}/user_factors.parquet"))
        rng = np.random.default_rng(0)
        sample = users[rng.choice(len(users), size=min(cfg.recall_sample_queries, len(users)), replace=False)]
        recall = ann_index.recall_at_k(built.index, vectors, ids, sample, 100)
        ann_index.save(built.index, out / f"index-{variant}.faiss")
        info = {
            "kind": built.kind,
            "dim": int(vectors.shape[1]),
            "n_items": int(len(ids)),
            "built_on": built.built_on,
            "recall_at_100": recall,
            "build_seconds": round(built.build_seconds, 3),
        }
        write_json(out / f"info-{variant}.json", info)
        report[variant] = info
    return report
