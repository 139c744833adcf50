"""The spooled log writer: each flush reaches the spool, rotation turns it into Parquet,
a spool left by a killed process is recovered once (never twice, never half-read)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from shared.events import EventLogWriter, FeedbackEvent, event_row
from shared.parquet_log import SPOOL_DIR, part_files, read_spool, recover_orphans, write_parts

T0 = dt.datetime(2026, 2, 21, 12, tzinfo=dt.UTC)


def event(n: int, day: int = 21) -> FeedbackEvent:
    ts = T0.replace(day=day) + dt.timedelta(seconds=n)
    return FeedbackEvent(f"e{n}", "click", f"u{n % 3}", f"m{n}", ts, ts, None, None)


def ids_on_disk(root: Path) -> list[str]:
    return [i for f in part_files(root) for i in pq.read_table(f).column("event_id").to_pylist()]


def spools(root: Path) -> list[Path]:
    return sorted((root / SPOOL_DIR).glob("*.arrows"))


def test_each_flush_reaches_the_spool_and_rotation_replaces_it(tmp_path: Path) -> None:
    writer = EventLogWriter(tmp_path, rotate_seconds=3600, flush_seconds=0.05)
    try:
        writer.log_events([event(n) for n in range(10)])
        writer.flush()
        time.sleep(0.1)
        writer.log_events([event(n) for n in range(10, 15)])
        writer.flush()
        [spool] = spools(tmp_path)
        table = read_spool(spool)
        assert table is not None and table.column("event_id").to_pylist() == [
            f"e{n}" for n in range(15)]  # fmt: skip
        assert part_files(tmp_path) == []  # not rotated yet
        assert recover_orphans(tmp_path) == 0  # its owner lives and holds the lock
    finally:
        writer.close()
    assert sorted(ids_on_disk(tmp_path)) == sorted(f"e{n}" for n in range(15))
    assert spools(tmp_path) == [] and writer.records_written == 15


_KILLED = """
import os, signal, sys, datetime as dt
sys.path.insert(0, {repo!r})
from shared.events import EventLogWriter, FeedbackEvent
t = dt.datetime(2026, 2, 21, 12, tzinfo=dt.UTC)
w = EventLogWriter({root!r}, rotate_seconds=3600, flush_seconds=0.05, recover=False)
w.log_events([FeedbackEvent(f"e{{n}}", "click", "u", "m", t, t) for n in range(300)])
w.flush()
w.log_events([FeedbackEvent("unflushed", "click", "u", "m", t, t)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_writer(root: Path) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", _KILLED.format(repo=repo, root=str(root))],
                          timeout=60, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_a_killed_writers_spool_is_recovered_once(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    assert part_files(tmp_path) == [] and len(spools(tmp_path)) == 1
    assert recover_orphans(tmp_path) == 300
    assert sorted(ids_on_disk(tmp_path)) == sorted(f"e{n}" for n in range(300))
    assert spools(tmp_path) == [] and recover_orphans(tmp_path) == 0


def test_the_next_writer_recovers_orphans_at_start(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    with EventLogWriter(tmp_path) as writer:
        writer.log_events([event(1000)])
    assert writer.recovered == 300
    assert sorted(ids_on_disk(tmp_path)) == sorted([f"e{n}" for n in range(300)] + ["e1000"])


def test_a_torn_spool_gives_its_complete_flushes(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    [spool] = spools(tmp_path)
    size = spool.stat().st_size
    with open(spool, "r+b") as f:  # a kill in the middle of a second flush's message
        f.seek(size)
        f.write(b"\xff\xff\xff\xff\x00\x10\x00\x00partial")
    assert recover_orphans(tmp_path) == 300
    shutil.rmtree(tmp_path / "date=2026-02-21")
    (tmp_path / SPOOL_DIR / "1-x-000001.arrows").write_bytes(b"\xff\xff")  # no schema yet
    assert recover_orphans(tmp_path) == 0 and spools(tmp_path) == []


def test_an_owner_killed_after_linking_is_not_counted_twice(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    [spool] = spools(tmp_path)
    table = read_spool(spool)
    assert table is not None
    stem = spool.name.removesuffix(".arrows")
    # As if the owner wrote its Parquet and died before deleting the spool.
    assert write_parts(tmp_path, stem, table) == 300
    assert recover_orphans(tmp_path) == 0
    assert len(ids_on_disk(tmp_path)) == 300 and spools(tmp_path) == []


def test_rows_and_days_split_and_rows_survive_gc(tmp_path: Path) -> None:
    with EventLogWriter(tmp_path, rotate_rows=10, flush_seconds=0.01) as writer:
        writer.log_events([event(n) for n in range(25)] + [event(99, day=22)])
    files = part_files(tmp_path)
    assert {f.parent.name for f in files} == {"date=2026-02-21", "date=2026-02-22"}
    assert all(pq.read_metadata(f).num_rows <= 10 for f in files)
    assert sorted(ids_on_disk(tmp_path)) == sorted([f"e{n}" for n in range(25)] + ["e99"])
    assert event_row(event(1))[0] == "e1"
    assert os.listdir(tmp_path / SPOOL_DIR) == []
