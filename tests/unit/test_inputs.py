"""What counts as input (shared/inputs.py): the one test both the DAG's sensor and the
pipeline's reader use."""

from __future__ import annotations

from pathlib import Path

from shared.inputs import CONTRACT_FILES, candidates, describe_expected, find_input


def test_find_input_accepts_file_or_parquet_directory(tmp_path: Path) -> None:
    assert find_input(tmp_path) is None
    assert find_input(tmp_path / "nope") is None
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n")
    assert find_input(tmp_path) == tmp_path / "interactions.csv"
    spark_dir = tmp_path / "b" / "interactions.parquet"
    spark_dir.mkdir(parents=True)
    (spark_dir / "_temporary").mkdir()
    (spark_dir / "part-0.parquet").write_bytes(b"PAR1")
    assert find_input(tmp_path / "b") is None  # still being written
    (spark_dir / "_temporary").rmdir()
    assert find_input(tmp_path / "b") == spark_dir
    assert "interactions.parquet" in describe_expected(tmp_path)


def test_parquet_is_preferred_and_partitioned_directories_count(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n")
    (tmp_path / "interactions.parquet").write_bytes(b"PAR1")
    assert find_input(tmp_path) == tmp_path / "interactions.parquet"
    parts = tmp_path / "p" / "interactions" / "date=2026-01-01"
    parts.mkdir(parents=True)
    (parts / "part-0.parquet").write_bytes(b"PAR1")
    assert find_input(tmp_path / "p") == tmp_path / "p" / "interactions"


def test_empty_or_misnamed_inputs_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "interactions.parquet").write_bytes(b"")  # created, not yet written
    (tmp_path / "interactions").write_text("a file where a directory is expected")
    (tmp_path / "interactions.csv").mkdir()  # CSV is a file, never a directory
    assert find_input(tmp_path) is None
    (tmp_path / "empty_dir").mkdir()
    assert find_input(tmp_path / "empty_dir") is None


def test_every_contract_file_is_looked_for_the_same_way(tmp_path: Path) -> None:
    for name in CONTRACT_FILES:
        assert [p.name for p in candidates(tmp_path, name)] == [
            f"{name}.parquet", f"{name}.csv", name
        ]  # fmt: skip
    (tmp_path / "items.csv").write_text("item_id\na\n")
    assert find_input(tmp_path, "items") == tmp_path / "items.csv"
    assert find_input(tmp_path, "users") is None


def test_the_spark_reader_and_the_sensor_share_the_definition() -> None:
    """No second copy: the reader's module uses this very function (it must not define one)."""
    import ast


    source = (Path(__file__).resolve().parents[2] / "batch" / "spark" / "inputs.py").read_text()
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert "find_input" not in defined
    assert "from shared.inputs import" in source
    dag = (Path(__file__).resolve().parents[2] / "dags" / "recsys_nightly.py").read_text()
    assert "from shared.inputs import" in dag
