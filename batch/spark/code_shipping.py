"""Ship the project's own Python packages to the executors of a non-local master.

Executors import `batch.*` and `shared.*` to run the pipeline's task code (mapInPandas,
mapPartitions: cloudpickle pickles module-level functions by reference). In local mode
they are threads of the driver and see its sys.path; on a cluster they are other
processes, on other machines, and must not depend on the driver's checkout being on their
disk. The packages travel as one zip through SparkContext.addPyFile (the driver's file
server), the programmatic `--py-files`; executors put it first on their sys.path, ahead of
any installed copy of the project.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

PACKAGES = ("batch", "shared")
# What setuptools' package-data ships besides the modules (pyproject.toml).
SUFFIXES = (".py", ".sql", ".json", ".yaml", ".html")


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def code_files(root: Path) -> list[Path]:
    return sorted(
        path for package in PACKAGES for path in (root / package).rglob("*")
        if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
    )  # fmt: skip


def build_zip(root: Path, out_dir: Path) -> Path:
    """The packages as `recsys-code-<hash>.zip` in out_dir; the name changes with the code,
    since addPyFile refuses a second file of one name with other contents."""
    files = code_files(root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    target = out_dir / f"recsys-code-{digest.hexdigest()[:16]}.zip"
    if not target.exists():
        partial = target.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(root).as_posix())
        partial.replace(target)
    return target


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def ship_code(spark: SparkSession) -> Path | None:
    """addPyFile the project's packages unless the master is local; returns the zip."""
    if is_local(spark.sparkContext.master):
        return None
    # The driver's own temporary directory is fine here: the file travels by RPC.
    out_dir = Path(tempfile.gettempdir()) / "recsys-code"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = build_zip(project_root(), out_dir)
    spark.sparkContext.addPyFile(str(path))
    return path
