"""Recall@100 against exact search and query latency of each FAISS index type, on the
item and user vectors of a published bundle (or random vectors at a given scale).

    .venv/bin/python bench/ann_recall.py --artifacts /tmp/recsys-bench/art-mls
    .venv/bin/python bench/ann_recall.py --random-items 200000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from batch.index.ann import build_index, recall_at_k
from shared import bundle_layout as layout
from shared.bundle import current_bundle
from shared.config import IndexConfig

KINDS = {
    "flat": IndexConfig(exact_max_items=10**9),
    "hnsw": IndexConfig(exact_max_items=0, hnsw_max_items=10**9),
    "ivf": IndexConfig(exact_max_items=0, hnsw_max_items=0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--random-items", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    if args.artifacts:
        bundle = current_bundle(args.artifacts)
        items = np.load(bundle / layout.ITEM_FACTORS)
        users = np.load(bundle / layout.USER_FACTORS)
        keep = np.flatnonzero(np.abs(items).sum(axis=1) > 0)
        ids, vectors = keep.astype(np.int64), np.ascontiguousarray(items[keep])
        rng = np.random.default_rng(0)
        queries = users[rng.choice(len(users), min(args.queries, len(users)), replace=False)]
    else:
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.random_items, args.dim)).astype(np.float32)
        ids = np.arange(args.random_items, dtype=np.int64)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    results = {}
    for kind, cfg in KINDS.items():
        built = build_index(ids, vectors, cfg)
        recall = recall_at_k(built.index, vectors, ids, queries, 100)
        times = []
        for q in queries[:200]:
            start = time.perf_counter()
            built.index.search(q[None, :], 100)
            times.append((time.perf_counter() - start) * 1000)
        results[kind] = {
            "recall@100": round(recall, 4),
            "build_s": round(built.build_seconds, 2),
            "query_ms_p50": round(float(np.median(times)), 3),
            "query_ms_p99": round(float(np.percentile(times, 99)), 3),
        }
    print(json.dumps({"n_items": len(ids), "dim": int(vectors.shape[1]), "indexes": results}, indent=2))


if __name__ == "__main__":
    main()
