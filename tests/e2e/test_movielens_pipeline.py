"""End to end on real data: import ml-latest-small, run the nightly pipeline through the
CLI, and check the published lists beat the popularity baseline and every source on the
run's own (default, mixed) evaluation split."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.bundle import current_bundle, verify_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.dataset]


def test_movielens_lists_beat_popularity(ml_latest_small: Path, repo_root: Path, tmp_path: Path) -> None:
    recsys = str(repo_root / ".venv" / "bin" / "recsys")
    data, art = tmp_path / "data", tmp_path / "art"
    subprocess.run([recsys, "data", "import-movielens", str(ml_latest_small), "--out", str(data)],
                   check=True, timeout=300)
    done = subprocess.run(
        [recsys, "batch", "run", "--data", str(data), "--artifacts", str(art), "--run-date", "2016-12-31"],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[11/11] publish: done" in done.stderr  # one progress line per stage
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = verify_bundle(current_bundle(art))
    assert summary["published"] == manifest.run_id
    lists = manifest.metrics["lists"]
    assert manifest.metrics["protocol"] == "mixed"  # the default: newest and random hold-out
    assert manifest.metrics["users_evaluated"] > 600
    assert lists["merged"]["ndcg@10"] > 1.2 * lists["popularity"]["ndcg@10"]
    # The re-ranker is trained and the published lists lose to none of their inputs: every
    # source alone (EASE, the strongest, by a small margin; the others by a clear one).
    assert manifest.metrics["reranker"]["status"] == "reranked"
    assert manifest.metrics["reranker"]["order"] in ("reranked", "fused")
    assert lists["merged"]["ndcg@10"] >= lists["ease"]["ndcg@10"]
    best_other = max(lists[s]["ndcg@10"] for s in ("ann", "cooc", "popular"))
    assert lists["merged"]["ndcg@10"] > 1.15 * best_other
    assert manifest.row_counts["interactions_clean"] == 100_004
    assert manifest.metrics["candidate_recall"]["merged"]["recall@500"] > 0.4
