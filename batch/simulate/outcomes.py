"""Outcomes as the warehouse measures them: the analysts' canned analysis, not our counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from shared import canned_queries
from shared.warehouse import analyst_warehouse_path


def outcomes_by_bundle(artifacts: Path) -> dict[str, dict[str, Any]]:
    """The `outcomes_by_bundle` canned analysis of the analysts' warehouse, by bundle."""
    query = canned_queries.get("outcomes_by_bundle")
    with duckdb.connect(str(analyst_warehouse_path(artifacts)), read_only=True) as con:
        cursor = con.execute(query.sql, query.bind({}))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {str(r["bundle"]): r for r in rows}
