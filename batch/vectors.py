"""Factor tables as numpy: the (idx, vector) Parquet the ALS stage writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n], vectors float32 [n, d]) from a (idx, vector) Parquet directory."""
    table = pq.read_table(path)
    id_col = table.column(0).to_numpy().astype(np.int64)
    flat = table.column("vector").combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    vectors = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return id_col, np.ascontiguousarray(vectors.reshape(len(id_col), dim))
