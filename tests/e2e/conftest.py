"""Artifacts for the service e2e tests.

`service_artifacts` is a private artifact directory holding one published bundle: a copy of
the `pipeline_artifacts` fixture's bundle (a real Spark-built one) when that fixture exists, else a
synthetic one from tests/online/bundle_factory (also with SERVICE_E2E_SYNTHETIC=1). Tests
publish new runs into it freely.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from shared.bundle import current_bundle, load_manifest, run_dir, write_current
from shared.bundle_layout import MANIFEST, METRICS
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


def _metric_leaves(tree: object, prefix: str = "") -> dict[str, object]:
    """metrics.json flattened to path -> value, floats rounded to the 4th decimal."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _metric_leaves(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _metric_leaves(sub, f"{prefix}[{i}]").items()}
    if isinstance(tree, float):
        return {prefix: round(tree, 4)}
    return {prefix: tree}


def assert_same_metrics(reference: Path, bundle: Path) -> None:
    """The two bundles' metrics.json agree on every number to the 4th decimal (what a run
    on another engine, a cluster or a retry must give), and the lists scored something."""
    want = _metric_leaves(json.loads((reference / METRICS).read_text()))
    got = _metric_leaves(json.loads((bundle / METRICS).read_text()))
    assert want.keys() == got.keys()
    assert {k: (want[k], got[k]) for k in want if want[k] != got[k]} == {}
    assert got["/lists/merged/ndcg@10"] > 0.0
