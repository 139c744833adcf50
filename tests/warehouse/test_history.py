"""Runs and metrics history survives pruning and is idempotent per run id."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from batch.publish.warehouse_build import update_history
from shared.bundle import BundleManifest, IndexInfo, run_dir
from shared.bundle_layout import MANIFEST


def fake_run(art: Path, run_id: str, day: str, ndcg: float) -> None:
    out = run_dir(art, run_id)
    out.mkdir(parents=True)
    manifest = BundleManifest(
        run_id=run_id, run_date=day, created_at=f"{day}T03:00:00+00:00", code_version="t",
        config_fingerprint="t", data_window={}, row_counts={"users": 3},
        metrics={"protocol": "temporal", "lists": {"merged": {"ndcg@10": ndcg}},
                 "candidate_recall": {"ann": {"recall@100": 0.5}},
                 "coverage": {"merged": 0.25}},
        index=IndexInfo(kind="flat", dim=4, n_items=10, built_on="cpu", recall_at_100=1.0,
                        build_seconds=0.1),
        files={}, extra={"config": {"publish": {"keep_runs": 3}}},
    )  # fmt: skip
    (out / MANIFEST).write_text(manifest.model_dump_json())


def test_history_survives_pruning_and_is_idempotent(tmp_path: Path) -> None:
    fake_run(tmp_path, "2026-01-01-a", "2026-01-01", 0.10)
    fake_run(tmp_path, "2026-01-02-b", "2026-01-02", 0.12)
    runs, metrics = update_history(tmp_path)
    assert runs["run_id"].to_pylist() == ["2026-01-01-a", "2026-01-02-b"]
    assert runs["created_at"].to_pylist()[0] == dt.datetime(2026, 1, 1, 3)
    rows = set(zip(metrics["run_id"].to_pylist(), metrics["list"].to_pylist(),
                   metrics["metric"].to_pylist(), metrics["value"].to_pylist(), strict=True))
    assert ("2026-01-01-a", "merged", "ndcg@10", 0.10) in rows
    assert ("2026-01-01-a", "merged", "coverage@10", 0.25) in rows
    assert ("2026-01-01-a", "ann", "recall@100", 0.5) in rows
    assert ("2026-01-01-a", "index", "recall@100", 1.0) in rows
    assert update_history(tmp_path)[1].num_rows == metrics.num_rows  # idempotent
    # Prune the first run, republish the second with a new value: both kept, one row each.
    shutil.rmtree(run_dir(tmp_path, "2026-01-01-a"))
    shutil.rmtree(run_dir(tmp_path, "2026-01-02-b"))
    fake_run(tmp_path, "2026-01-02-b", "2026-01-02", 0.13)
    runs, metrics = update_history(tmp_path)
    assert runs["run_id"].to_pylist() == ["2026-01-01-a", "2026-01-02-b"]
    ndcg = {r: v for r, li, m, v in zip(metrics["run_id"].to_pylist(),
            metrics["list"].to_pylist(), metrics["metric"].to_pylist(),
            metrics["value"].to_pylist(), strict=True) if li == "merged" and m == "ndcg@10"}
    assert ndcg == {"2026-01-01-a": 0.10, "2026-01-02-b": 0.13}
    assert (tmp_path / "history" / "metrics.parquet").exists()


def test_history_written_before_the_config_columns_still_merges(tmp_path: Path) -> None:
    """runs.parquet from before config_fingerprint/config: old rows keep NULLs, new rows
    carry the manifest's fingerprint and config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch.publish.warehouse_build import RUNS_SCHEMA

    old_schema = pa.schema([f for f in RUNS_SCHEMA if f.name not in ("config_fingerprint",
                                                                     "config")])  # fmt: skip
    (tmp_path / "history").mkdir()
    pq.write_table(pa.Table.from_pylist([{
        "run_id": "2025-12-31-z", "run_date": dt.date(2025, 12, 31),
        "created_at": dt.datetime(2025, 12, 31, 3), "code_version": "old", "protocol": "temporal",
        "row_counts": "{}", "data_window": "{}"}], schema=old_schema),
        tmp_path / "history" / "runs.parquet")  # fmt: skip
    fake_run(tmp_path, "2026-01-01-a", "2026-01-01", 0.10)
    runs, _ = update_history(tmp_path)
    assert runs["run_id"].to_pylist() == ["2025-12-31-z", "2026-01-01-a"]
    assert runs["config_fingerprint"].to_pylist() == [None, "t"]
    assert runs["config"].to_pylist() == [None, '{"publish": {"keep_runs": 3}}']
