"""Artifacts for the service e2e tests.

`service_artifacts` is a private artifact directory holding one published bundle: a copy of
the `pipeline_artifacts` fixture's bundle (a real Spark-built one) when that fixture exists, else a
synthetic one from tests/online/bundle_factory (also with SERVICE_E2E_SYNTHETIC=1). Tests
publish new runs into it freely.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shared.bundle import current_bundle, load_manifest, run_dir, write_current
from shared.bundle_layout import MANIFEST
from tests.online.bundle_factory import build_bundle


def _source_bundle(request: pytest.FixtureRequest, tmp: Path) -> Path:
    # SERVICE_E2E_SYNTHETIC=1 skips the (minutes-long) pipeline for a quick service check.
    if not os.environ.get("SERVICE_E2E_SYNTHETIC"):
        try:
            return current_bundle(Path(request.getfixturevalue("pipeline_artifacts")))
        except pytest.FixtureLookupError:
            pass
    artifacts = tmp / "factory"
    build_bundle(artifacts, "run-a", n_users=200, n_items=2000, dim=32, with_ranker=True)
    return current_bundle(artifacts)


@pytest.fixture(scope="module")
def service_artifacts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp = tmp_path_factory.mktemp("service")
    source = _source_bundle(request, tmp)
    artifacts = tmp / "artifacts"
    shutil.copytree(source, run_dir(artifacts, source.name))
    write_current(artifacts, source.name)
    return artifacts


def publish_clone(artifacts: Path, run_id: str, publish: bool = True) -> Path:
    """Publish the live bundle again under a new run id (same data, new manifest run_id)."""
    source = current_bundle(artifacts)
    target = run_dir(artifacts, run_id)
    shutil.copytree(source, target)
    manifest = load_manifest(target).model_copy(update={"run_id": run_id})
    (target / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    if publish:
        write_current(artifacts, run_id)
    return target
