"""Bundle pointer and checksum verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import bundle_layout as layout
from shared.bundle import (
    BundleManifest,
    IndexInfo,
    checksum_tree,
    read_current,
    verify_bundle,
    write_current,
)
from shared.errors import BundleError


def _bundle(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for name in layout.REQUIRED_FILES:
        (run / name).write_bytes(name.encode())
    manifest = BundleManifest(
        run_id="r1", run_date="2026-01-01", created_at="now", code_version="t",
        config_fingerprint="x", data_window={}, row_counts={}, metrics={},
        index=IndexInfo(kind="flat", dim=2, n_items=1, built_on="cpu", recall_at_100=1.0,
                        build_seconds=0.0),
        files=checksum_tree(run),
    )  # fmt: skip
    (run / layout.MANIFEST).write_text(manifest.model_dump_json())
    return run


def test_current_pointer_is_replaced_atomically(tmp_path: Path) -> None:
    assert read_current(tmp_path) is None
    write_current(tmp_path, "a")
    write_current(tmp_path, "b")
    assert read_current(tmp_path) == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]  # no temp files left behind


def test_verify_accepts_intact_and_refuses_tampered(tmp_path: Path) -> None:
    run = _bundle(tmp_path)
    assert verify_bundle(run).run_id == "r1"
    (run / layout.INDEX).write_bytes(b"corrupt")
    with pytest.raises(BundleError, match=f"checksum mismatch for {layout.INDEX}"):
        verify_bundle(run)


def test_verify_refuses_missing_file_and_manifest(tmp_path: Path) -> None:
    run = _bundle(tmp_path)
    (run / layout.ITEMS).unlink()
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(run)
    (run / layout.MANIFEST).unlink()
    with pytest.raises(BundleError, match=f"no {layout.MANIFEST}"):
        verify_bundle(run)
