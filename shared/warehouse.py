"""Read-only access to the analysts' DuckDB warehouse.

Two files are published side by side (batch/pipeline/warehouse_build.py):

* `ART/warehouse_analyst.duckdb`: pseudonymised tables only (`user_key`, never `user_id`),
  in schema `analyst` with same-named views in `main`. `recsys sql` opens it by default.
* `ART/warehouse.duckdb` (restricted): raw ids in `main` / `restricted.*`, plus the
  `analyst.*` views. `recsys sql --restricted` opens it.

The nightly publish writes each file under a temporary name and renames it into place;
readers open it read-only with external access disabled and the configuration locked, so a
query can neither write, nor read files (or ATTACH the other warehouse), nor undo that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from shared.errors import WarehouseUnavailable

WAREHOUSE_FILE = "warehouse.duckdb"
ANALYST_WAREHOUSE_FILE = "warehouse_analyst.duckdb"


def warehouse_path(artifacts: Path) -> Path:
    return artifacts / WAREHOUSE_FILE


def analyst_warehouse_path(artifacts: Path) -> Path:
    return artifacts / ANALYST_WAREHOUSE_FILE


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    if not path.exists():
        raise WarehouseUnavailable(f"no warehouse at {path}: run the nightly pipeline first")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET enable_external_access = false")
    # Timestamps are naive UTC; date_trunc etc. must not depend on the reader's zone.
    con.execute("SET TimeZone = 'UTC'")
    # Long queries would draw a progress bar into the output (CSV piped into a script).
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    return con


def connect_read_only(artifacts: Path) -> duckdb.DuckDBPyConnection:
    """The restricted warehouse (raw ids): on-call, pipeline checks, `--restricted`."""
    return _open(warehouse_path(artifacts))


def connect_analyst(artifacts: Path) -> duckdb.DuckDBPyConnection:
    """The pseudonymised warehouse: what analysts get by default."""
    return _open(analyst_warehouse_path(artifacts))


def connect(artifacts: Path, restricted: bool = False) -> duckdb.DuckDBPyConnection:
    return connect_read_only(artifacts) if restricted else connect_analyst(artifacts)


def run_query(
    artifacts: Path,
    sql: str,
    params: dict[str, Any] | None = None,
    restricted: bool = False,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = connect(artifacts, restricted)
    try:
        cursor = con.execute(sql, params) if params else con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    finally:
        con.close()


def vacuum(artifacts: Path) -> list[str]:
    """VACUUM and CHECKPOINT each warehouse file there is (the one writer a file may have:
    run it when nothing else writes, as the housekeeping DAG does). Returns one line per
    file; raises WarehouseUnavailable when there is none, or one is held by another process
    (the others are still vacuumed; the next publish rebuilds every file anyway)."""
    paths = [p for p in (warehouse_path(artifacts), analyst_warehouse_path(artifacts)) if p.exists()]
    if not paths:
        raise WarehouseUnavailable(f"no warehouse at {warehouse_path(artifacts)}: nothing to vacuum")
    done, busy = [], []
    for path in paths:
        before = path.stat().st_size
        try:
            con = duckdb.connect(str(path))
        except duckdb.IOException as exc:  # held by an analyst's session or the publish
            busy.append(f"{path} ({exc})")
            continue
        try:
            con.execute("VACUUM")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        done.append(f"vacuumed {path}: {before:,} -> {path.stat().st_size:,} bytes")
    if busy:
        raise WarehouseUnavailable("warehouse busy, not vacuumed: " + "; ".join(busy)
                                   + (f" (done: {'; '.join(done)})" if done else ""))
    return done
