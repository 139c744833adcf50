"""Seconds the load-time contents checks (shared/bundle_contents.py) add to reading a bundle
of the 20M-event run's size, side by side in one process with the rest of `read_bundle` and
with the checksum verification of the same files.

    .venv/bin/python bench/bundle_contents.py [--scratch /tmp/recsys-bench/contents-20m]
        [--rounds 3] [--users 400000] [--items 60000] [--keep]

The bundle is synthetic but has the 20M bundle's array sizes (400k users, 60k items, rank-64
factors, 100 list rows and 315 candidate rows per user: 40M and 126M rows, a re-ranker's
features); every value valid, so each check runs to the end. The per-user Parquet tables and
the index are small placeholders (read_bundle does not read them; the checksum time covers
the arrays only, so it is below a real bundle's). The page cache is warm after the first
round, as for a worker that loads a bundle its siblings already mapped: medians of the
rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from shared import bundle_layout as layout
from shared.bundle import GLOBAL_SEGMENT, IndexInfo, checksum_tree
from shared.bundle_contents import contents_problems
from shared.bundle_reader import read_bundle
from shared.bundle_writer import BundleWriter
from shared.feature_arrays import save_feature_arrays
from shared.features import FeatureArrays
from shared.sources import SOURCES

LIST_ROWS, CANDIDATE_ROWS, SEEN_ROWS, RECENT_ROWS, NEIGHBOURS, DIM = 100, 315, 40, 20, 30, 64


def _csr(target: Path, indptr_name: str, per_row: int, n_rows: int) -> None:
    np.save(target / indptr_name, np.arange(n_rows + 1, dtype=np.int64) * per_row)


def _per_user_items(n_users: int, per_user: int, n_items: int, lo: int, hi: int) -> np.ndarray:
    """Strictly increasing item ids within each user, all in [0, n_items)."""
    step = n_items // per_user
    users = np.arange(lo, hi, dtype=np.int64)[:, None]
    return (np.arange(per_user, dtype=np.int64)[None, :] * step + users % step).astype(
        np.int32
    ).reshape(-1)


def build(target: Path, n_users: int, n_items: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    target.mkdir(parents=True)
    writer = BundleWriter(target)
    writer.factors(rng.normal(size=(n_items, DIM)).astype(np.float32),
                   rng.normal(size=(n_users, DIM)).astype(np.float32))  # fmt: skip
    writer.index(b"placeholder: read_bundle does not open the index")
    writer.items(pa.table({
        "item_idx": pa.array(range(n_items), pa.int32()),
        "item_id": [f"m{i}" for i in range(n_items)],
        "title": [f"Title {i}" for i in range(n_items)],
        "genres": ["Drama"] * n_items,
        "available_regions": pa.array([None] * n_items, pa.string()),
    }))  # fmt: skip
    writer.users(pa.table({
        "user_idx": pa.array(range(n_users), pa.int32()),
        "user_id": [f"u{u}" for u in range(n_users)],
        "region": ["eu" if u % 2 else "us" for u in range(n_users)],
    }))  # fmt: skip
    writer.quarantine(pa.table({"reason": pa.array([], pa.string())}))
    for name in (layout.RECOMMENDATIONS, layout.CANDIDATES):  # placeholders, see the docstring
        shutil.copy(target / layout.QUARANTINE, target / name)
    writer.popular(pa.table({
        "segment": [GLOBAL_SEGMENT] * 100, "rank": list(range(1, 101)),
        "item_idx": list(range(100)), "item_id": [f"m{i}" for i in range(100)],
        "score": [float(100 - i) for i in range(100)],
    }))  # fmt: skip
    writer.metrics({"ndcg@10": 0.1})

    open_memmap = np.lib.format.open_memmap
    width = len(SOURCES)
    chunk = 20_000  # users per block written: bounded memory
    _csr(target, layout.SEEN_INDPTR, SEEN_ROWS, n_users)
    _csr(target, layout.REC_INDPTR, LIST_ROWS, n_users)
    _csr(target, layout.CANDIDATE_INDPTR, CANDIDATE_ROWS, n_users)
    seen = open_memmap(target / layout.SEEN_INDICES, "w+", np.int32, (n_users * SEEN_ROWS,))
    rec_items = open_memmap(target / layout.REC_ITEMS, "w+", np.int32, (n_users * LIST_ROWS,))
    rec_scores = open_memmap(target / layout.REC_SCORES, "w+", np.float32, (n_users * LIST_ROWS,))
    rec_sources = open_memmap(target / layout.REC_SOURCES, "w+", np.uint32, (n_users * LIST_ROWS,))
    n_cand = n_users * CANDIDATE_ROWS
    cand_items = open_memmap(target / layout.CANDIDATE_ITEMS, "w+", np.int32, (n_cand,))
    cand_scores = open_memmap(target / layout.CANDIDATE_SCORES, "w+", np.float32, (n_cand, width))
    cand_ranks = open_memmap(target / layout.CANDIDATE_RANKS, "w+", np.float32, (n_cand, width))
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        seen[lo * SEEN_ROWS:hi * SEEN_ROWS] = _per_user_items(n_users, SEEN_ROWS, n_items, lo, hi)
        rows = slice(lo * LIST_ROWS, hi * LIST_ROWS)
        rec_items[rows] = _per_user_items(n_users, LIST_ROWS, n_items, lo, hi)
        rec_scores[rows] = rng.random(rows.stop - rows.start, dtype=np.float32)
        rec_sources[rows] = rng.integers(1, 8, rows.stop - rows.start, dtype=np.uint32)
        rows = slice(lo * CANDIDATE_ROWS, hi * CANDIDATE_ROWS)
        n = rows.stop - rows.start
        cand_items[rows] = _per_user_items(n_users, CANDIDATE_ROWS, n_items, lo, hi)
        present = rng.random((n, width)) < 0.6
        cand_scores[rows] = np.where(present, rng.random((n, width), dtype=np.float32), np.nan)
        cand_ranks[rows] = np.where(present, rng.integers(1, 316, (n, width)), np.nan)
    for array in (seen, rec_items, rec_scores, rec_sources, cand_items, cand_scores, cand_ranks):
        array.flush()
    del seen, rec_items, rec_scores, rec_sources, cand_items, cand_scores, cand_ranks
    (target / layout.REC_SOURCE_NAMES).write_text(json.dumps(list(SOURCES)))

    buckets = 12
    day, start = 86_400.0, 1_700_000_000.0
    save_feature_arrays(FeatureArrays(
        item_stats=rng.random((n_items, 6), dtype=np.float32) * 100,
        item_genres=(rng.random((n_items, 20)) < 0.2).astype(np.float32),
        user_stats=rng.random((n_users, 4), dtype=np.float32) * 10,
        user_genres=rng.dirichlet(np.ones(20), n_users).astype(np.float32),
        neighbor_indptr=np.arange(n_items + 1, dtype=np.int64) * NEIGHBOURS,
        neighbor_indices=rng.integers(0, n_items, n_items * NEIGHBOURS, dtype=np.int32),
        neighbor_sims=rng.random(n_items * NEIGHBOURS, dtype=np.float32),
        recent_indptr=np.arange(n_users + 1, dtype=np.int64) * RECENT_ROWS,
        recent_indices=rng.integers(0, n_items, n_users * RECENT_ROWS, dtype=np.int32),
        item_times=start + np.sort(rng.random((n_items, 2)) * 900 * day, axis=1),
        user_times=start + np.sort(rng.random((n_users, 2)) * 900 * day, axis=1),
        item_buckets=rng.integers(0, 50, (n_items, buckets)).astype(np.float32),
        bucket_edges=start + np.linspace(0, 900 * day, buckets + 1),
        bucket_totals=np.full(buckets, 1e6),
        item_factors=np.zeros((0, 1), np.float32),
        user_factors=np.zeros((0, 1), np.float32),
    ), target / layout.FEATURES_DIR, with_factors=False)  # fmt: skip
    writer.ranker({"model": layout.MODEL_INT8, "input": "features", "output": "score",
                   "features": []}, {layout.MODEL_INT8: b"placeholder"})  # fmt: skip
    writer.finish(
        run_id="run-contents-bench", run_date="2026-01-01", created_at="2026-01-01T00:00:00",
        code_version="bench", config_fingerprint="bench", data_window={},
        row_counts={"users": n_users, "items": n_items}, metrics={},
        index=IndexInfo(kind="placeholder", dim=DIM, n_items=n_items, built_on="cpu",
                        recall_at_100=0.0, build_seconds=0.0),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/recsys-bench/contents-20m"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--keep", action="store_true", help="keep the bundle for a rerun")
    args = parser.parse_args()
    bundle = args.scratch / "runs" / "run-contents-bench"
    if not (bundle / layout.MANIFEST).exists():
        shutil.rmtree(bundle, ignore_errors=True)
        started = time.perf_counter()
        build(bundle, args.users, args.items)
        print(f"built {bundle} in {time.perf_counter() - started:.1f} s")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"bundle: {args.users:,} users x {args.items:,} items, {size / 2**30:.2f} GiB, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    timings: dict[str, list[float]] = {"read_bundle": [], "contents check": [], "checksums": []}
    for round_no in range(1, args.rounds + 1):
        started = time.perf_counter()
        data = read_bundle(bundle, verify_checksums=False)  # includes one contents check
        timings["read_bundle"].append(time.perf_counter() - started)
        started = time.perf_counter()
        problems = contents_problems(data)
        timings["contents check"].append(time.perf_counter() - started)
        assert problems == [], problems
        started = time.perf_counter()
        checksum_tree(bundle)
        timings["checksums"].append(time.perf_counter() - started)
        print(f"round {round_no}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items()))
    medians = {k: statistics.median(v) for k, v in timings.items()}
    rest = medians["read_bundle"] - medians["contents check"]
    print(f"median of {args.rounds}: read_bundle {medians['read_bundle']:.2f} s = contents check "
          f"{medians['contents check']:.2f} s + the rest {rest:.2f} s; sha256 of the same files "
          f"(verify_checksums, the default) {medians['checksums']:.2f} s")  # fmt: skip
    if not args.keep:
        shutil.rmtree(args.scratch / "runs" / "run-contents-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
