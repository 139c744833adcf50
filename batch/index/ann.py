"""Stage 5: the FAISS index over item vectors.

The index type follows catalog size: exact (flat inner product) for small catalogs,
HNSW up to a few million items, IVF beyond. Built on GPU when FAISS sees one, then moved
back to CPU, because the service searches on CPU. Its recall@100 against exact search is
measured on sampled user vectors and recorded.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from shared.config import IndexConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltIndex:
    index: faiss.Index
    kind: str
    built_on: str
    build_seconds: float


def _gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def build_index(ids: np.ndarray, vectors: np.ndarray, config: IndexConfig) -> BuiltIndex:
    """ids: int64 [n] item_idx; vectors: float32 [n, d]."""
    n, dim = vectors.shape
    start = time.perf_counter()
    if n <= config.exact_max_items:
        kind, base = "flat", faiss.IndexFlatIP(dim)
    elif n <= config.hnsw_max_items:
        kind = "hnsw"
        base = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 200
        base.hnsw.efSearch = config.hnsw_ef_search
    else:
        kind = "ivf"
        nlist = int(4 * math.sqrt(n))
        base = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        base.nprobe = config.ivf_nprobe
    built_on = "cpu"
    if not base.is_trained:
        # Training (IVF k-means) is the costly part of a build: on GPU when one is present.
        if _gpu_count() > 0:
            resources = faiss.StandardGpuResources()
            gpu = faiss.index_cpu_to_gpu(resources, 0, base)
            gpu.train(vectors)
            base = faiss.index_gpu_to_cpu(gpu)
            built_on = "gpu"
        else:
            base.train(vectors)
    index = faiss.IndexIDMap2(base)
    index.add_with_ids(vectors, ids.astype(np.int64))
    elapsed = time.perf_counter() - start
    log.info("index: %s over %d items (dim %d) built on %s in %.2fs", kind, n, dim, built_on, elapsed)
    return BuiltIndex(index=index, kind=kind, built_on=built_on, build_seconds=elapsed)


def recall_at_k(
    index: faiss.Index, item_vectors: np.ndarray, item_ids: np.ndarray, queries: np.ndarray, k: int
) -> float:
    """Share of the exact top-k (flat inner product) that the index returns."""
    if len(queries) == 0:
        return 1.0
    k = min(k, len(item_ids))
    exact = faiss.IndexFlatIP(item_vectors.shape[1])
    exact.add(item_vectors)
    _, ref_pos = exact.search(queries, k)
    ref = item_ids[ref_pos]
    _, got = index.search(queries, k)
    hits = sum(len(set(r.tolist()) & set(g.tolist())) for r, g in zip(ref, got, strict=True))
    return hits / ref.size


def save(index: faiss.Index, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
