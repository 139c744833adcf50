"""Scratch artifacts for the service benchmarks, and new bundles published into them.

The benchmarks never write into the artifacts they are given: the bundle CURRENT names is
linked (hard links, a copy across filesystems) into a scratch artifact root, which then
also receives the served-request log and the clones published to exercise hot reload.
A clone is the same files under a new run id (its manifest rewritten), published the way
the batch side publishes: a complete run directory first, then CURRENT replaced atomically.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from loadgen import Periodic

from shared.bundle import current_bundle, load_manifest, read_current, run_dir, write_current
from shared.bundle_layout import MANIFEST


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_run(source: Path, target: Path, run_id: str) -> None:
    shutil.copytree(source, target, copy_function=_link_or_copy)
    manifest = load_manifest(source).model_copy(update={"run_id": run_id})
    (target / MANIFEST).unlink()  # a hard link to the source's: never write through it
    (target / MANIFEST).write_text(manifest.model_dump_json(indent=2))


def scratch_artifacts(given: Path, dest: Path) -> Path:
    """An artifact root at dest serving the bundle given/CURRENT names."""
    source = current_bundle(given)
    target = run_dir(dest, source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, copy_function=_link_or_copy)
    write_current(dest, source.name)
    return dest


def publish_clone(artifacts: Path, run_id: str, keep: int = 3) -> None:
    """Publish the live bundle again as run_id and point CURRENT at it; delete clones older
    than the last `keep` (a worker may still be loading the previous one)."""
    source = current_bundle(artifacts)
    _copy_run(source, run_dir(artifacts, run_id), run_id)
    write_current(artifacts, run_id)
    runs = sorted(run_dir(artifacts, "x").parent.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep]:
        if old.name != read_current(artifacts):
            shutil.rmtree(old, ignore_errors=True)


class Republisher(Periodic):
    """A thread publishing a clone every `every` seconds until stopped; `published` lists
    (seconds since start, run id) of each."""

    name = "republisher"

    def __init__(self, artifacts: Path, every: float, prefix: str = "reload") -> None:
        super().__init__(every)
        self.artifacts, self.prefix = artifacts, prefix
        self.published: list[tuple[float, str]] = []

    def tick(self, elapsed: float) -> None:
        run_id = f"{self.prefix}-{time.strftime('%H%M%S')}-{len(self.published):04d}"
        publish_clone(self.artifacts, run_id)
        self.published.append((time.monotonic() - self._t0, run_id))
