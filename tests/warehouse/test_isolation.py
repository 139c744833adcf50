"""The analyst file holds no raw id and cannot write, read files or attach the restricted
warehouse; the restricted file has the raw ids; the pseudonym is a keyed HMAC."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from shared.privacy import KEY_ENV, MODE_ENV, PseudonymKeyMissing, load_key, pseudonym
from shared.warehouse import connect_analyst, connect_read_only, warehouse_path
from tests.warehouse.conftest import KEY, USERS

RAW_IDS = set(USERS) | {"ghost"}


def test_analyst_file_contains_no_raw_user_id(warehouse_art: Path) -> None:
    con = connect_analyst(warehouse_art)
    try:
        schemas = {r[0] for r in con.execute(
            "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE NOT internal").fetchall()}
        assert schemas == {"analyst"}
        columns = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal"
        ).fetchall()
        assert not [c for c in columns if c[1] == "user_id"]
        # Scan every text column of every table for a raw id.
        for table, column in columns:
            found = con.execute(
                f'SELECT count(*) FROM analyst."{table}" WHERE CAST("{column}" AS VARCHAR) '
                "IN (SELECT unnest($ids))", {"ids": sorted(RAW_IDS)}
            ).fetchone()
            assert found == (0,), (table, column)
    finally:
        con.close()
    # Nor anywhere in the file's bytes (the raw ids here are distinctive enough: 'ghost').
    data = (warehouse_art / "warehouse_analyst.duckdb").read_bytes()
    assert b"ghost" not in data and KEY not in data


def test_analyst_sees_user_keys_and_restricted_maps_them(warehouse_art: Path) -> None:
    con = connect_analyst(warehouse_art)
    try:
        keys = {r[0] for r in con.execute("SELECT user_key FROM recommendations").fetchall()}
    finally:
        con.close()
    assert keys == {pseudonym(KEY, u) for u in ("u1", "u2", "u3")}
    raw = connect_read_only(warehouse_art)
    try:
        assert raw.execute("SELECT count(DISTINCT user_id) FROM restricted.recommendations"
                           ).fetchone() == (3,)  # fmt: skip
        mapped = raw.execute("SELECT user_id FROM restricted.user_keys WHERE user_key = $k",
                             {"k": pseudonym(KEY, "u2")}).fetchall()  # fmt: skip
        assert mapped == [("u2",)]
    finally:
        raw.close()


@pytest.mark.parametrize("statement", [
    "CREATE TABLE evil AS SELECT 1",
    "DROP TABLE analyst.items",
    "INSERT INTO analyst.items (item_id) VALUES ('x')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY analyst.items TO '/tmp/stolen.csv'",
    "SET enable_external_access = true",
    "RESET lock_configuration",
])  # fmt: skip
def test_analyst_connection_cannot_write_or_read_files(warehouse_art: Path, statement: str) -> None:
    con = connect_analyst(warehouse_art)
    try:
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    finally:
        con.close()


def test_analyst_connection_cannot_attach_the_restricted_file(warehouse_art: Path) -> None:
    con = connect_analyst(warehouse_art)
    try:
        # No progress bar drawn into CSV output; timestamps read in UTC.
        assert con.execute("SELECT current_setting('enable_progress_bar'), "
                           "current_setting('TimeZone')").fetchone() == (False, "UTC")
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{warehouse_path(warehouse_art)}' AS raw (READ_ONLY)")
        with pytest.raises(duckdb.Error):
            con.execute(f"SELECT * FROM read_parquet('{warehouse_art}/served_log/*/*.parquet')")
    finally:
        con.close()


def test_sql_command_defaults_to_analyst(warehouse_art: Path) -> None:
    base = [sys.executable, "-m", "shared.cli", "sql", "--artifacts", str(warehouse_art),
            "--format", "csv"]  # fmt: skip
    out = subprocess.run([*base, "SELECT user_key, rank, item_id FROM recommendations "
                          "ORDER BY user_key, rank LIMIT 1"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    denied = subprocess.run([*base, "SELECT user_id FROM recommendations"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert denied.returncode == 2 and "user_id" in denied.stderr
    raw = subprocess.run([*base, "--restricted", "SELECT min(user_id) FROM recommendations"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert raw.returncode == 0 and raw.stdout.splitlines()[1] == "u1"


def test_pseudonym_is_keyed() -> None:
    a = pseudonym(b"key-a", "u1")
    assert a == pseudonym(b"key-a", "u1")
    assert a != pseudonym(b"key-b", "u1")
    assert a != pseudonym(b"key-a", "u2")
    plain = hashlib.sha256(b"u1").hexdigest()
    assert not plain.startswith(a) and a not in plain


def test_key_from_env_file_or_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(MODE_ENV, raising=False)
    first = load_key(tmp_path)
    key_file = tmp_path / "state" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_key(tmp_path) == first and len(first) >= 32  # stable across nights
    assert load_key(tmp_path / "other") != first  # per artifacts directory
    monkeypatch.setenv(KEY_ENV, "prod-secret")
    assert load_key(tmp_path) == b"prod-secret"
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(MODE_ENV, "required")
    with pytest.raises(PseudonymKeyMissing, match=KEY_ENV):
        load_key(tmp_path)


def test_raw_warehouse_is_not_world_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """warehouse.duckdb (raw ids) is 0600 like the key, and so is everything of it while it
    is built (the file and DuckDB's WAL sit in a 0700 directory); the analysts' file stays
    readable. A rebuild over an old world-readable file replaces its mode too."""
    from batch.publish import warehouse_build
    from shared.warehouse import analyst_warehouse_path
    from tests.warehouse.conftest import inputs

    raw, analyst = warehouse_path(tmp_path), analyst_warehouse_path(tmp_path)
    raw.write_bytes(b"old")
    raw.chmod(0o644)
    seen: list[tuple[Path, int, dict[str, int]]] = []
    user_keys = warehouse_build._user_keys

    def spy(con: duckdb.DuckDBPyConnection, key: bytes) -> None:  # mid-build, WAL open
        db = Path(con.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                              "current_database()").fetchone()[0])  # fmt: skip
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
        seen.append((db, stat.S_IMODE(db.parent.stat().st_mode), files))
        user_keys(con, key)

    monkeypatch.setattr(warehouse_build, "_user_keys", spy)
    old_umask = os.umask(0o022)
    try:
        warehouse_build.build(inputs(tmp_path), raw, analyst, KEY)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600
    assert stat.S_IMODE(analyst.stat().st_mode) & 0o044 == 0o044
    assert not raw.with_name(raw.name + ".wal").exists()
    (db, dir_mode, files), = seen
    assert db.parent != tmp_path and dir_mode == 0o700, (db, oct(dir_mode))
    assert f"{raw.name}.wal" in files  # the WAL existed, inside the private directory
    assert not list(tmp_path.glob(".warehouse-build-*"))  # the private directory is gone
    con = connect_read_only(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM users").fetchone() == (len(USERS),)
    finally:
        con.close()
