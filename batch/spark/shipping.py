"""Ship a driver-side file to every executor under a name unique to its contents.

SparkContext.addFile refuses a second file of the same name with other contents for the
life of the SparkContext ("exists and does not match contents"). One session that runs the
pipeline twice (tomorrow's run in the same Airflow worker, a backfill, a test) rebuilds the
index and the EASE weights under the same names, so each file is shipped as
`<stem>-<version><suffix>`, a hard link (or copy) whose version changes with the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from pyspark.sql import SparkSession

SHIPPED_DIR = ".shipped"


def _version(path: Path) -> str:
    # Size and mtime in ns change with every rewrite; hashing multi-GB weights would not pay.
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ship_file(spark: SparkSession, path: Path) -> str:
    """Add `path` to the executors' files; returns the name to pass to SparkFiles.get."""
    shipped = path.parent / SHIPPED_DIR / f"{path.stem}-{_version(path)}{path.suffix}"
    if not shipped.exists():
        shipped.parent.mkdir(parents=True, exist_ok=True)
        partial = shipped.with_name(shipped.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            os.link(path, partial)
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(path, partial)
        os.replace(partial, shipped)
    spark.sparkContext.addFile(str(shipped))
    return shipped.name
