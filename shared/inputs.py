"""Where the input data contract's files are: the names, the formats, and when one is ready.

A data directory holds `interactions`, `items` (optional) and `users` (optional), each as
`NAME.parquet` (a file, or a directory of Parquet part files as Spark writes it),
`NAME.csv` (a file), or a directory `NAME/` of Parquet part files (batch/data/contract.py
has the columns). The nightly DAG's sensor waits with `find_input`, and the pipeline's
reader (batch/spark/inputs.py) reads what it finds, so both agree on what counts.

Pure Python (pathlib only): the DAG processor imports it.
"""

from __future__ import annotations

from pathlib import Path

INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
CONTRACT_FILES = (INTERACTIONS, ITEMS, USERS)
FORMATS = ("parquet", "csv")  # the file suffixes the pipeline reads
WRITING_MARKER = "_temporary"  # Spark's: the directory is still being written


def candidates(data_dir: str | Path, name: str = INTERACTIONS) -> tuple[Path, Path, Path]:
    """The places an input may be, in the order they are looked at."""
    root = Path(data_dir)
    return root / f"{name}.parquet", root / f"{name}.csv", root / name


def _ready(path: Path) -> bool:
    if path.is_file():
        # `NAME/` is a directory of part files only; an empty file is not data yet.
        return path.suffix in (".parquet", ".csv") and path.stat().st_size > 0
    if path.is_dir() and path.suffix != ".csv":
        if (path / WRITING_MARKER).exists():
            return False
        return any(path.glob("*.parquet")) or any(path.glob("*/*.parquet"))
    return False


def find_input(data_dir: str | Path, name: str = INTERACTIONS) -> Path | None:
    """The input `name` if it is there and complete, else None: a non-empty `.parquet` or
    `.csv` file, or a directory of Parquet part files (directly or one partition level
    down) that Spark is not still writing (no `_temporary/` in it)."""
    for path in candidates(data_dir, name):
        if _ready(path):
            return path
    return None


def describe_expected(data_dir: str | Path, name: str = INTERACTIONS) -> str:
    """What `find_input` looks for, for messages."""
    parquet, csv, directory = candidates(data_dir, name)
    return f"{parquet} (file or directory of parquet files), {csv} or {directory}/*.parquet"
