"""The pure parts of the standalone cluster and of code shipping (no JVM started)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from batch.cluster.standalone import (
    ClusterError,
    ClusterState,
    Daemon,
    StandaloneCluster,
    alive_workers,
    free_port,
    group_pids,
    spark_home,
    stop,
)
from batch.spark.code_shipping import build_zip, code_files, is_local, project_root


def test_spark_home_is_the_pyspark_package_with_its_launcher() -> None:
    home = spark_home()
    assert (home / "bin" / "spark-class").exists()
    assert any((home / "jars").glob("spark-core_*.jar"))


def test_state_round_trips_and_stop_without_state_is_a_no_op(tmp_path: Path) -> None:
    state = ClusterState(str(tmp_path), "127.0.0.1", "spark://127.0.0.1:1", "http://127.0.0.1:2",
                         1, "2g", [Daemon("master", 999_999_999, 1, 2, "log")])
    state.save()
    assert ClusterState.load(tmp_path) == state
    assert stop(tmp_path, timeout_s=0.1) == ["master"]  # a pid that no longer exists
    assert not (tmp_path / "cluster.json").exists()
    assert stop(tmp_path) == []
    with pytest.raises(ClusterError, match="no cluster state"):
        ClusterState.load(tmp_path)


def test_start_refuses_what_it_cannot_hide(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="not a directory"):
        StandaloneCluster(tmp_path / "c", hide_from_workers=(tmp_path / "missing",)).start()
    with pytest.raises(ClusterError, match="cluster directory is inside it"):
        StandaloneCluster(tmp_path / "c", hide_from_workers=(tmp_path,)).start()
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_alive_workers_counts_only_alive_ones() -> None:
    status = {"workers": [{"state": "ALIVE"}, {"state": "DEAD"}, {"state": "ALIVE"}]}
    assert len(alive_workers(status)) == 2
    assert alive_workers({}) == []


def test_free_port_and_group_pids() -> None:
    assert 0 < free_port("127.0.0.1") < 65536
    assert group_pids(999_999_999) == []


def test_the_code_zip_holds_both_packages_and_changes_name_with_the_code(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for package in ("batch", "shared"):
        (root / package / "__pycache__").mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "shared" / "q.sql").write_text("select 1")
    first = build_zip(root, tmp_path)
    assert sorted(zipfile.ZipFile(first).namelist()) == [
        "batch/__init__.py", "shared/__init__.py", "shared/q.sql"]
    assert build_zip(root, tmp_path) == first
    (root / "batch" / "__init__.py").write_text("X = 1\n")
    assert build_zip(root, tmp_path) != first


def test_the_real_project_ships_its_modules_and_local_masters_ship_nothing() -> None:
    names = {p.relative_to(project_root()).as_posix() for p in code_files(project_root())}
    assert {"batch/spark/candidates.py", "shared/config.py"} <= names
    assert is_local("local[*]") and is_local("local[2]") and is_local("local")
    assert not is_local("spark://127.0.0.1:7077") and not is_local("yarn")
