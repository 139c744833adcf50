"""What decides a user's re-ranked list, as keys the next run compares (incremental rank).

A published list is a pure function of the run key (the shipped ONNX model's bytes, top_k,
the feature list, this module's version, the ONNX Runtime that scores) and of the user's
candidate rows as the scoring task sees them: the user, its items in order, each item's
source bits (they become the list's `sources`) and every float32 feature value the model
reads. `user_fingerprint` hashes exactly those rows; a later run reuses the user's list
only when both the run key and the fingerprint are equal (batch/ranker/incremental.py).

Pure numpy/hashlib, no Spark: the scoring tasks call it per user, the tests directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

# Bump when what is hashed, or how a list is built from the scores, changes: every user of
# a run made by older code is then rescored once.
FINGERPRINT_VERSION = 1


def user_fingerprint(user: int, items: np.ndarray, source_bits: np.ndarray,
                     x: np.ndarray) -> tuple[int, int]:
    """128-bit BLAKE2b of the user's model inputs, as two signed int64 (Spark LongType).

    Fixed dtypes and shapes go into the hash, so the same values in another dtype or a
    different split of rows and columns never collide by construction. A chance collision
    between a user's two nights is 2^-128: it cannot happen in practice."""
    h = hashlib.blake2b(digest_size=16)
    feats = np.ascontiguousarray(x, dtype=np.float32)
    h.update(np.array([FINGERPRINT_VERSION, user, *feats.shape], dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(items, dtype=np.int32).tobytes())
    h.update(np.ascontiguousarray(source_bits, dtype=np.int32).tobytes())
    h.update(feats.tobytes())
    digest = h.digest()
    return (int.from_bytes(digest[:8], "little", signed=True),
            int.from_bytes(digest[8:], "little", signed=True))


def run_key(model: bytes, top_k: int, features: Sequence[str], onnxruntime_version: str) -> str:
    """sha256 over everything run-wide a list depends on: two runs with the same key give
    the same list to a user whose fingerprint is the same."""
    h = hashlib.sha256()
    h.update(f"v{FINGERPRINT_VERSION}|top_k={top_k}|ort={onnxruntime_version}|".encode())
    h.update("\x1f".join(features).encode())
    h.update(b"|model=")
    h.update(hashlib.sha256(model).digest())
    return h.hexdigest()
