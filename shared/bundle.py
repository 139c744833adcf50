"""The published bundle: layout, manifest, checksums and the CURRENT pointer.

A bundle is `ART/runs/<run_id>/`, immutable once published. `ART/CURRENT` is a one-line
file holding the run id of the live bundle; it is replaced atomically (write + rename), so
readers see either the old or the new run id, never a half-written one.

Files in a bundle (all relative to the run directory):
  manifest.json            BundleManifest below; checksums of every other file
  items.parquet            item_idx:int32, item_id:str, title, genres, available_regions
  users.parquet            user_idx:int32, user_id:str, region
  item_factors.npy         float32 [n_items, dim], row = item_idx (memory-mappable)
  user_factors.npy         float32 [n_users, dim], row = user_idx
  index.faiss              FAISS index over item_factors (inner product), ids = item_idx
  seen_indptr.npy          int64 [n_users + 1]  CSR of items each user interacted with
  seen_indices.npy         int32 [nnz]
  recommendations.parquet  user_idx, user_id, rank (1..K), item_idx, item_id, score, sources
  rec_*.npy, rec_sources.json  the same lists as per-user CSR arrays the service memory-maps
                           (indptr, items, scores, source bitmasks; shared/recommendation_arrays.py)
  candidates.parquet       user_idx, item_idx, sources, score_<source>, rank_<source>
  candidate_*.npy          the same scores and ranks as per-user CSR arrays the service
                           memory-maps (indptr, items, scores, ranks; shared/candidate_arrays.py)
  popular.parquet          segment ("__global__" or a region), rank, item_idx, item_id, score
  quarantine.parquet       the rows refused by validation, with their reason
  metrics.json             evaluation metrics of the run (also in the manifest)
Optional (bundles without them stay valid; the service then scores with ALS):
  ranker/spec.json         {"model", "input", "output", "features": [names], "parity", ...}
  ranker/model.fp32.onnx   the re-ranker, input "features" float32 [N, F], output "score" [N]
  ranker/model.int8.onnx   its int8 quantization (spec.json's "model" names the shipped one)
  features/*.npy           the arrays shared.features.compute_features reads (see there)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from shared.candidate_arrays import FILES as CANDIDATE_ARRAY_FILES
from shared.errors import BundleError
from shared.recommendation_arrays import FILES as RECOMMENDATION_ARRAY_FILES

# 2: the candidate_*.npy and rec_*.npy arrays (the service reads no Parquet table per user).
SCHEMA_VERSION = 2
CURRENT_FILE = "CURRENT"
RUNS_DIR = "runs"
MANIFEST_FILE = "manifest.json"
GLOBAL_SEGMENT = "__global__"

REQUIRED_FILES = (
    "items.parquet",
    "users.parquet",
    "item_factors.npy",
    "user_factors.npy",
    "index.faiss",
    "seen_indptr.npy",
    "seen_indices.npy",
    "recommendations.parquet",
    "candidates.parquet",
    *CANDIDATE_ARRAY_FILES,
    *RECOMMENDATION_ARRAY_FILES,
    "popular.parquet",
    "metrics.json",
)

RANKER_DIR = "ranker"
RANKER_SPEC = "ranker/spec.json"
FEATURES_DIR = "features"


class IndexInfo(BaseModel):
    kind: str
    dim: int
    n_items: int
    built_on: str
    recall_at_100: float
    build_seconds: float


class BundleManifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    run_date: str
    created_at: str
    code_version: str
    config_fingerprint: str
    data_window: dict[str, str]
    row_counts: dict[str, int]
    metrics: dict[str, Any]
    index: IndexInfo
    files: dict[str, str] = Field(description="relative path -> sha256")
    extra: dict[str, Any] = Field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_tree(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under run_dir except the manifest, keyed by relative path."""
    out: dict[str, str] = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            out[path.relative_to(run_dir).as_posix()] = sha256_file(path)
    return out


def run_dir(artifacts: Path, run_id: str) -> Path:
    return artifacts / RUNS_DIR / run_id


def read_current(artifacts: Path) -> str | None:
    pointer = artifacts / CURRENT_FILE
    if not pointer.exists():
        return None
    value = pointer.read_text().strip()
    return value or None


def write_current(artifacts: Path, run_id: str) -> None:
    """Atomically point CURRENT at run_id (rename is atomic on POSIX filesystems)."""
    tmp = artifacts / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(run_id + "\n")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, artifacts / CURRENT_FILE)


def load_manifest(bundle: Path) -> BundleManifest:
    path = bundle / MANIFEST_FILE
    if not path.exists():
        raise BundleError(f"bundle {bundle} has no {MANIFEST_FILE}")
    try:
        return BundleManifest.model_validate(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"bundle {bundle}: unreadable manifest: {exc}") from exc


def verify_bundle(bundle: Path, check_checksums: bool = True) -> BundleManifest:
    """Refuse a bundle that is incomplete, of another schema, or whose files changed."""
    manifest = load_manifest(bundle)
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {manifest.run_id}: schema_version {manifest.schema_version}, "
            f"this code reads {SCHEMA_VERSION}"
        )
    missing = [name for name in REQUIRED_FILES if not (bundle / name).exists()]
    if missing:
        raise BundleError(f"bundle {manifest.run_id}: missing files {missing}")
    if check_checksums:
        for rel, expected in manifest.files.items():
            path = bundle / rel
            if not path.exists():
                raise BundleError(f"bundle {manifest.run_id}: missing file {rel}")
            if sha256_file(path) != expected:
                raise BundleError(f"bundle {manifest.run_id}: checksum mismatch for {rel}")
    return manifest


def current_bundle(artifacts: Path) -> Path:
    run_id = read_current(artifacts)
    if run_id is None:
        raise BundleError(f"no published bundle: {artifacts / CURRENT_FILE} is missing")
    return run_dir(artifacts, run_id)
