"""The published bundle: manifest, checksums, verification and the CURRENT pointer.

A bundle is `ART/runs/<run_id>/`, immutable once published. `ART/CURRENT` is a one-line
file holding the run id of the live bundle; it is replaced atomically (write + rename), so
readers see either the old or the new run id, never a half-written one.

`ART/accepted/<server_id>` is a server's memory of the last bundle it accepted (loaded and
validated), in the same one-line format: a worker that starts while CURRENT names a bundle
it must refuse serves that one instead of nothing. One file per server, so servers sharing
an artifact directory never overwrite each other's.

The files in a bundle are named (and described) in shared/bundle_layout.py; they are
written by shared/bundle_writer.py and read by shared/bundle_reader.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from shared import bundle_layout as layout
from shared.errors import BundleError

# 2: the candidate_*.npy and rec_*.npy arrays (the service reads no Parquet table per user).
SCHEMA_VERSION = 2
CURRENT_FILE = "CURRENT"
RUNS_DIR = "runs"
ACCEPTED_DIR = "accepted"
GLOBAL_SEGMENT = "__global__"


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
        if path.is_file() and path.name != layout.MANIFEST:
            out[path.relative_to(run_dir).as_posix()] = sha256_file(path)
    return out


def run_dir(artifacts: Path, run_id: str) -> Path:
    return artifacts / RUNS_DIR / run_id


def _read_pointer(pointer: Path) -> str | None:
    """The run id a one-line pointer file holds; None when it is missing or empty."""
    if not pointer.exists():
        return None
    value = pointer.read_text().strip()
    return value or None


def _write_pointer(pointer: Path, run_id: str) -> None:
    """Atomically replace a pointer file (write, fsync, rename: atomic on POSIX), so a
    reader sees the old or the new run id, never a half-written one."""
    # pid and thread id: two workers (or two threads of one) never share a temporary file.
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(run_id + "\n")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, pointer)


def read_current(artifacts: Path) -> str | None:
    return _read_pointer(artifacts / CURRENT_FILE)


def write_current(artifacts: Path, run_id: str) -> None:
    """Atomically point CURRENT at run_id."""
    _write_pointer(artifacts / CURRENT_FILE, run_id)


def accepted_file(artifacts: Path, server_id: str) -> Path:
    return artifacts / ACCEPTED_DIR / server_id


def read_accepted(artifacts: Path, server_id: str) -> str | None:
    """The run id this server last accepted; None when it never accepted one here."""
    return _read_pointer(accepted_file(artifacts, server_id))


def write_accepted(artifacts: Path, server_id: str, run_id: str) -> None:
    """Remember run_id as this server's last accepted bundle (atomically)."""
    pointer = accepted_file(artifacts, server_id)
    pointer.parent.mkdir(exist_ok=True)
    _write_pointer(pointer, run_id)


def accepted_runs(artifacts: Path) -> dict[str, str]:
    """server_id -> the run id it last accepted, for every server that left a record:
    the runs a restarting worker may fall back to, which pruning must keep."""
    out: dict[str, str] = {}
    directory = artifacts / ACCEPTED_DIR
    if not directory.is_dir():
        return out
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            run_id = _read_pointer(path)
            if run_id is not None:
                out[path.name] = run_id
    return out


def load_manifest(bundle: Path) -> BundleManifest:
    path = bundle / layout.MANIFEST
    if not path.exists():
        raise BundleError(f"bundle {bundle} has no {layout.MANIFEST}")
    try:
        return BundleManifest.model_validate(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"bundle {bundle}: unreadable manifest: {exc}") from exc


def verify_bundle(bundle: Path, check_checksums: bool = True) -> BundleManifest:
    """Refuse a bundle that is incomplete, of another schema, or whose files changed."""
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle.name}: run directory {bundle} does not exist")
    manifest = load_manifest(bundle)
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {manifest.run_id}: schema_version {manifest.schema_version}, "
            f"this code reads {SCHEMA_VERSION}"
        )
    missing = [name for name in layout.REQUIRED_FILES if not (bundle / name).exists()]
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
