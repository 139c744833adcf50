"""Every file of a published bundle, named once.

A bundle is one directory, `ART/runs/<run_id>/` (see shared/bundle.py for the run
directory, CURRENT and the manifest). This module is the only place that spells the name
of a file in it: the verification (shared/bundle.py), the writer (shared/bundle_writer.py,
used by publish and the service tests' factory), the reader (shared/bundle_reader.py and
online/bundle_loader.py) and the warehouse rebuild all take the names from here.

Adding a file to the bundle: name it here (and in REQUIRED_FILES if a bundle without it
must be refused), give shared/bundle_writer.BundleWriter the method that writes it, and
read it in shared/bundle_reader.read_bundle. See docs/bundle.md.

Root files (all relative to the run directory):
  manifest.json            BundleManifest; checksums of every other file
  items.parquet            item_idx:int32, item_id:str, title, genres, available_regions
  users.parquet            user_idx:int32, user_id:str, region
  item_factors.npy         float32 [n_items, dim], row = item_idx (memory-mappable)
  user_factors.npy         float32 [n_users, dim], row = user_idx
  index.faiss              FAISS index over item_factors (inner product), ids = item_idx
  seen_indptr.npy          int64 [n_users + 1]  CSR of items each user interacted with
  seen_indices.npy         int32 [nnz]
  recommendations.parquet  user_idx, user_id, rank (1..K), item_idx, item_id, score, sources
  candidates.parquet       user_idx, item_idx, sources, score_<source>, rank_<source>
  popular.parquet          segment ("__global__" or a region), rank, item_idx, item_id, score
  quarantine.parquet       the rows refused by validation, with their reason
  metrics.json             evaluation metrics of the run (also in the manifest)
  metrics.png              the same as a chart, for people
The published lists as per-user arrays (shared/recommendation_arrays.py):
  rec_indptr.npy, rec_items.npy, rec_scores.npy, rec_sources.npy, rec_sources.json
The candidate table as per-user arrays (shared/candidate_arrays.py):
  candidate_indptr.npy, candidate_items.npy, candidate_scores.npy, candidate_ranks.npy
Optional (bundles without them stay valid; the service then scores with ALS):
  features/<name>.npy      the arrays shared.features.compute_features reads, one per
                           ARRAY_NAMES (see shared/features.py); the factors are the root's
  ranker/spec.json         {"model", "input", "output", "features": [names], "parity", ...}
  ranker/model.fp32.onnx   the re-ranker, input "features" float32 [N, F], output "score" [N]
  ranker/model.int8.onnx   its int8 quantization (spec.json's "model" names the shipped one)
  monitoring/feature_stats.json  the features' and scores' summary statistics and PSI bin
                           edges, of the training sample and the candidates as scored
                           (shared/feature_stats.py); the service's skew reference
"""

from __future__ import annotations

from shared.features import ARRAY_NAMES, FACTOR_NAMES

MANIFEST = "manifest.json"

# --- root files ----------------------------------------------------------------------
ITEMS = "items.parquet"
USERS = "users.parquet"
ITEM_FACTORS = "item_factors.npy"
USER_FACTORS = "user_factors.npy"
INDEX = "index.faiss"
SEEN_INDPTR = "seen_indptr.npy"
SEEN_INDICES = "seen_indices.npy"
RECOMMENDATIONS = "recommendations.parquet"
CANDIDATES = "candidates.parquet"
POPULAR = "popular.parquet"
QUARANTINE = "quarantine.parquet"
METRICS = "metrics.json"
METRICS_CHART = "metrics.png"

# --- the published lists, per user (shared/recommendation_arrays.py) -------------------
REC_INDPTR = "rec_indptr.npy"
REC_ITEMS = "rec_items.npy"
REC_SCORES = "rec_scores.npy"
REC_SOURCES = "rec_sources.npy"
REC_SOURCE_NAMES = "rec_sources.json"
REC_FILES = (REC_INDPTR, REC_ITEMS, REC_SCORES, REC_SOURCES, REC_SOURCE_NAMES)

# --- the candidate table, per user (shared/candidate_arrays.py) ------------------------
CANDIDATE_INDPTR = "candidate_indptr.npy"
CANDIDATE_ITEMS = "candidate_items.npy"
CANDIDATE_SCORES = "candidate_scores.npy"
CANDIDATE_RANKS = "candidate_ranks.npy"
CANDIDATE_FILES = (CANDIDATE_INDPTR, CANDIDATE_ITEMS, CANDIDATE_SCORES, CANDIDATE_RANKS)

# --- features/ -------------------------------------------------------------------------
# A features directory (the bundle's features/, and the features stage's work directory,
# which also holds the factors) has one .npy per shared.features.FeatureArrays field.
FEATURES_DIR = "features"
FEATURE_ARRAY_FILES: dict[str, str] = {name: f"{name}.npy" for name in ARRAY_NAMES}
FACTOR_ARRAY_FILES: dict[str, str] = dict(zip(FACTOR_NAMES, (ITEM_FACTORS, USER_FACTORS),
                                              strict=True))  # fmt: skip


def feature_file(file: str) -> str:
    """The bundle path of a features-directory file ("item_stats.npy")."""
    return f"{FEATURES_DIR}/{file}"


FEATURE_FILES = tuple(feature_file(file) for file in FEATURE_ARRAY_FILES.values())

# --- ranker/ ---------------------------------------------------------------------------
RANKER_DIR = "ranker"
RANKER_SPEC = f"{RANKER_DIR}/spec.json"
# Model file names as spec.json's "model" holds them (relative to ranker/).
MODEL_FP32 = "model.fp32.onnx"
MODEL_INT8 = "model.int8.onnx"
RANKER_MODELS = (MODEL_FP32, MODEL_INT8)


def ranker_file(model: str) -> str:
    """The bundle path of a model file named in spec.json ("model.int8.onnx")."""
    return f"{RANKER_DIR}/{model}"


RANKER_FILES = (RANKER_SPEC, *(ranker_file(m) for m in RANKER_MODELS))

# --- monitoring/ -----------------------------------------------------------------------
MONITORING_DIR = "monitoring"
FEATURE_STATS = f"{MONITORING_DIR}/feature_stats.json"

# A bundle without one of these is refused (shared.bundle.verify_bundle).
REQUIRED_FILES = (
    ITEMS,
    USERS,
    ITEM_FACTORS,
    USER_FACTORS,
    INDEX,
    SEEN_INDPTR,
    SEEN_INDICES,
    RECOMMENDATIONS,
    CANDIDATES,
    *CANDIDATE_FILES,
    *REC_FILES,
    POPULAR,
    METRICS,
)
OPTIONAL_FILES = (QUARANTINE, METRICS_CHART, *FEATURE_FILES, *RANKER_FILES, FEATURE_STATS)
ALL_FILES = (MANIFEST, *REQUIRED_FILES, *OPTIONAL_FILES)
