"""Build a small, valid bundle directory with known structure for service tests, through
the same writer publish uses (shared.bundle_writer.BundleWriter).

Structure the tests rely on:
  item i: item_id "m<i>", genre "Drama" unless i % 4 == 0 (so one genre dominates),
          available only in "eu" if i % 5 == 0, only in "us" if i % 5 == 1, else everywhere.
  user u: user_id "u<u>", region "eu" for even u, "us" for odd u; seen items SEEN_PER_USER;
          the last user has no precomputed list.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared import bundle_layout as layout
from shared.bundle import (
    GLOBAL_SEGMENT,
    IndexInfo,
    checksum_tree,
    load_manifest,
    run_dir,
    write_current,
)
from shared.bundle_writer import BundleWriter, CandidateChunks
from shared.features import FeatureArrays
from shared.sources import SOURCES

SEEN_PER_USER = 5
LIST_LENGTH = 30


def item_genre(i: int) -> str:
    return "Comedy|Drama" if i % 4 == 0 else "Drama|Thriller"


def item_regions(i: int) -> str | None:
    return {0: "eu", 1: "us", 2: "eu|us"}.get(i % 5)


def build_bundle(
    artifacts: Path,
    run_id: str = "run-a",
    *,
    n_users: int = 40,
    n_items: int = 200,
    dim: int = 16,
    seed: int = 0,
    publish: bool = True,
    with_ranker: bool = False,
    with_feature_stats: bool = False,
    created_at: datetime | None = None,
) -> Path:
    """Write ART/runs/<run_id>/ with every required file and a checksummed manifest.

    with_feature_stats (needs with_ranker): monitoring/feature_stats.json of the candidates
    the service retrieves for each user with the default ann_k (the batch candidates plus
    the ANN top 100), as both training and candidates sample. created_at: the publish time in
    the manifest (default now)."""
    rng = np.random.default_rng(seed)
    out = run_dir(artifacts, run_id)
    out.mkdir(parents=True, exist_ok=False)
    writer = BundleWriter(out)
    item_f = rng.normal(size=(n_items, dim)).astype(np.float32)
    user_f = rng.normal(size=(n_users, dim)).astype(np.float32)
    writer.factors(item_f, user_f)
    index = faiss.IndexFlatIP(dim)
    index.add(item_f)
    writer.index(faiss.serialize_index(index).tobytes())

    items = pa.table(
        {
            "item_idx": pa.array(range(n_items), pa.int32()),
            "item_id": [f"m{i}" for i in range(n_items)],
            "title": [f"Title {i}" for i in range(n_items)],
            "genres": [item_genre(i) for i in range(n_items)],
            "available_regions": pa.array([item_regions(i) for i in range(n_items)], pa.string()),
        }
    )
    writer.items(items)
    users = pa.table(
        {
            "user_idx": pa.array(range(n_users), pa.int32()),
            "user_id": [f"u{u}" for u in range(n_users)],
            "region": ["eu" if u % 2 == 0 else "us" for u in range(n_users)],
        }
    )
    writer.users(users)

    seen = [np.sort(rng.choice(n_items, SEEN_PER_USER, replace=False)) for _ in range(n_users)]
    writer.seen(np.repeat(np.arange(n_users), SEEN_PER_USER), np.concatenate(seen), n_users)

    rec_rows: dict[str, list[object]] = {
        k: [] for k in ("user_idx", "user_id", "rank", "item_idx", "item_id", "score", "sources")
    }
    cand_rows: dict[str, list[object]] = {
        k: []
        for k in ("user_idx", "item_idx", "sources")
        + tuple(f"{kind}_{s}" for s in SOURCES for kind in ("score", "rank"))
    }
    for u in range(n_users - 1):  # the last user has no precomputed list
        scores = item_f @ user_f[u]
        scores[seen[u]] = -np.inf
        top = np.argsort(-scores)[:LIST_LENGTH]
        for rank, i in enumerate(top, start=1):
            sources = ["ann", "cooc"] if rank % 3 == 0 else ["ann"]
            for key, value in zip(
                rec_rows,
                (u, f"u{u}", rank, int(i), f"m{i}", float(scores[i]), sources),
                strict=True,
            ):
                rec_rows[key].append(value)
            cooc = (float(scores[i]) / 2, rank) if "cooc" in sources else (None, None)
            assert SOURCES[:2] == ("ann", "cooc")
            # ann and cooc as above; every other batch source (ease, popular) absent
            row = (u, int(i), sources, float(scores[i]), rank, *cooc,
                   *[None] * (2 * (len(SOURCES) - 2)))
            for key, value in zip(cand_rows, row, strict=True):
                cand_rows[key].append(value)
    rec_schema = pa.schema(
        [
            ("user_idx", pa.int32()),
            ("user_id", pa.string()),
            ("rank", pa.int32()),
            ("item_idx", pa.int32()),
            ("item_id", pa.string()),
            ("score", pa.float32()),
            ("sources", pa.list_(pa.string())),
        ]
    )
    writer.recommendations(pa.table(rec_rows, schema=rec_schema), n_users)
    cand_schema = pa.schema(
        [
            ("user_idx", pa.int32()),
            ("item_idx", pa.int32()),
            ("sources", pa.list_(pa.string())),
            *[
                (f"{kind}_{s}", pa.float32() if kind == "score" else pa.int32())
                for s in SOURCES
                for kind in ("score", "rank")
            ],
        ]
    )
    writer.candidates(CandidateChunks.from_table(pa.table(cand_rows, schema=cand_schema)), n_users)

    popularity = np.arange(n_items, 0, -1, dtype=np.float32)  # item 0 most popular
    pop_rows: dict[str, list[object]] = {
        k: [] for k in ("segment", "rank", "item_idx", "item_id", "score")
    }
    for segment in (GLOBAL_SEGMENT, "eu", "us"):
        members = [
            i for i in range(n_items) if segment == GLOBAL_SEGMENT or segment != "eu" or i % 7
        ]
        for rank, i in enumerate(members[:50], start=1):
            for key, value in zip(
                pop_rows, (segment, rank, i, f"m{i}", float(popularity[i])), strict=True
            ):
                pop_rows[key].append(value)
    writer.popular(pa.table(pop_rows))
    writer.quarantine(pa.table({"reason": pa.array([], pa.string())}))
    metrics = {"ndcg@10": 0.1}
    writer.metrics(metrics)

    if with_ranker:
        arrays = write_ranker(writer, seen, n_users, n_items, rng)
        if with_feature_stats:
            writer.feature_stats(candidate_stats(arrays, item_f, user_f, cand_rows))
    writer.finish(
        run_id=run_id,
        run_date="2026-01-01",
        created_at=(created_at or datetime.now(UTC)).isoformat(),
        code_version="test",
        config_fingerprint="test",
        data_window={"train_start": "2025-01-01", "train_end": "2026-01-01"},
        row_counts={"items": n_items, "users": n_users},
        metrics=metrics,
        index=IndexInfo(
            kind="flat",
            dim=dim,
            n_items=n_items,
            built_on="cpu",
            recall_at_100=1.0,
            build_seconds=0.0,
        ),
    )
    if publish:
        write_current(artifacts, run_id)
    return out


def write_ranker(
    writer: BundleWriter, seen: list[np.ndarray], n_users: int, n_items: int,
    rng: np.random.Generator,
) -> FeatureArrays:
    """features/ arrays and ranker/ (spec + a linear ONNX model: score = 2 * als_dot);
    returns the arrays.

    Needs the `onnx` package (batch extra) to write the model.
    """
    from dataclasses import fields

    from onnx import TensorProto, helper, numpy_helper

    from shared.features import FEATURE_NAMES, N_FEATURES

    per_item = 5
    day, start = 86_400.0, 1_700_000_000.0
    extra = {  # newer shared.features fields; passed only if this version has them
        "item_times": start + np.sort(rng.random((n_items, 2)) * 90 * day, axis=1),
        "user_times": start + np.sort(rng.random((n_users, 2)) * 90 * day, axis=1),
        "item_buckets": rng.integers(0, 20, (n_items, 4)).astype(np.float32),
        "bucket_edges": start + np.linspace(0, 120 * day, 5),
        "bucket_totals": np.full(4, 20.0 * n_items),
    }
    known = {f.name for f in fields(FeatureArrays)}
    arrays = FeatureArrays(
        **{k: v for k, v in extra.items() if k in known},
        item_stats=rng.random((n_items, 6)).astype(np.float32) * 100,
        item_genres=np.array([[i % 4 == 0, 1.0] for i in range(n_items)], dtype=np.float32),
        user_stats=rng.random((n_users, 4)).astype(np.float32) * 10,
        user_genres=rng.dirichlet([1.0, 1.0], n_users).astype(np.float32),
        neighbor_indptr=np.arange(n_items + 1, dtype=np.int64) * per_item,
        neighbor_indices=rng.integers(0, n_items, n_items * per_item).astype(np.int32),
        neighbor_sims=rng.random(n_items * per_item).astype(np.float32),
        recent_indptr=np.arange(n_users + 1, dtype=np.int64) * SEEN_PER_USER,
        recent_indices=np.concatenate(seen).astype(np.int32),
        item_factors=np.zeros((0, 1), np.float32),  # the bundle root has the factors
        user_factors=np.zeros((0, 1), np.float32),
    )
    writer.feature_arrays(arrays)
    weights = np.zeros((N_FEATURES, 1), np.float32)
    weights[FEATURE_NAMES.index("als_dot")] = 2.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["score"])],
        "ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = {"model": layout.MODEL_INT8, "input": "features", "output": "score",
            "features": list(FEATURE_NAMES)}  # fmt: skip
    writer.ranker(spec, {layout.MODEL_INT8: model.SerializeToString()})
    return arrays


def candidate_stats(arrays: FeatureArrays, item_f: np.ndarray, user_f: np.ndarray,
                    cand_rows: dict[str, list[object]], ann_k: int = 100) -> dict[str, object]:  # fmt: skip
    """feature_stats.json of compute_features over each listed user's service candidates
    (its batch candidates, with their source scores and ranks, plus the exact ANN top
    ann_k), scored like write_ranker's model (2 * als_dot): both samples."""
    from dataclasses import replace

    from shared import feature_stats
    from shared.features import FEATURE_NAMES, FEATURES, compute_features

    full = replace(arrays, item_factors=item_f, user_factors=user_f)
    users = np.asarray(cand_rows["user_idx"])
    listed_items = np.asarray(cand_rows["item_idx"])
    columns = {kind: np.array([[np.nan if v is None else v for v in cand_rows[f"{kind}_{s}"]]
                               for s in SOURCES], dtype=np.float64).T
               for kind in ("score", "rank")}  # fmt: skip
    parts = []
    for u in np.unique(users):
        mine = np.flatnonzero(users == u)
        ann = np.argsort(-(item_f @ user_f[u]), kind="stable")[:ann_k]
        items = np.unique(np.r_[listed_items[mine], ann])
        scores = np.full((len(items), len(SOURCES)), np.nan)
        ranks = scores.copy()
        at = np.searchsorted(items, listed_items[mine])
        scores[at], ranks[at] = columns["score"][mine], columns["rank"][mine]
        parts.append(compute_features(full, int(u), items, scores, ranks))
    x = np.concatenate(parts)
    model_scores = 2 * x[:, FEATURE_NAMES.index("als_dot")]
    defaults = {f.name: f.default for f in FEATURES}
    return feature_stats.build(x, FEATURE_NAMES, defaults, model_scores, x, model_scores)


def corrupt(bundle: Path, name: str = layout.ITEM_FACTORS) -> None:
    """Change a file after its checksum was recorded (as a partial copy would)."""
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def resign(bundle: Path) -> None:
    """Record the checksums of the bundle's files as they are now, as a publish of these
    files would: what a tampered or hand-repaired bundle looks like to the service."""
    manifest = load_manifest(bundle).model_copy(update={"files": checksum_tree(bundle)})
    (bundle / layout.MANIFEST).write_text(manifest.model_dump_json())


def rewrite_array(bundle: Path, name: str, change: Callable[[np.ndarray], None]) -> None:
    """Load one .npy of the bundle, change it in place, save it and re-sign the bundle."""
    path = bundle / name
    array = np.load(path)
    change(array)
    np.save(path, array)
    resign(bundle)


def rewrite_table(bundle: Path, name: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Replace one Parquet table of the bundle with change(table) and re-sign the bundle."""
    path = bundle / name
    pq.write_table(change(pq.read_table(path)), path)
    resign(bundle)


def half_copy(
    source: Path, target: Path, drop: str | None = None, truncate: str | None = None
) -> None:
    """What an interrupted copy leaves: the manifest and the other files, `drop` missing
    and `truncate` cut to half its size."""
    shutil.copytree(source, target)
    if drop is not None:
        (target / drop).unlink()
    if truncate is not None:
        path = target / truncate
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
