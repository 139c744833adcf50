"""Stage `index` (FAISS on the driver, no Spark): read item vectors written by the embeddings stage, build and save the
FAISS index of each variant, and record its recall@100 against exact search."""

from __future__ import annotations

import numpy as np

from batch.context import MODEL_VARIANTS, RunContext, write_json
from batch.index import ann as ann_index
from batch.vectors import read_vectors


def run(ctx: RunContext) -> dict[str, object]:
    cfg = ctx.config.index
    emb, out = ctx.outputs.embeddings, ctx.outputs.index
    report: dict[str, object] = {}
    for variant in MODEL_VARIANTS:
        ids, vectors = read_vectors(emb.item_factors(variant))
        built = ann_index.build_index(ids, vectors, cfg)
        _, users = read_vectors(emb.user_factors(variant))
        rng = np.random.default_rng(0)
        sample = users[rng.choice(len(users), size=min(cfg.recall_sample_queries, len(users)), replace=False)]
        recall = ann_index.recall_at_k(built.index, vectors, ids, sample, 100)
        ann_index.save(built.index, out.index(variant))
        info = {
            "kind": built.kind,
            "dim": int(vectors.shape[1]),
            "n_items": int(len(ids)),
            "built_on": built.built_on,
            "recall_at_100": recall,
            "build_seconds": round(built.build_seconds, 3),
        }
        write_json(out.info(variant), info)
        report[variant] = info
    return report
