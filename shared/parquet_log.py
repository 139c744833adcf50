"""A buffered, spooled Parquet log: the one writer behind the served-request and event logs.

Layout under `root`: `date=YYYY-MM-DD/part-<pid>-<token>-<seq>.parquet`, one file per
rotation and UTC day, plus `.spool/<pid>-<token>-<seq>.arrows`, the rotation in progress.

`append()` only appends a flat tuple to an in-memory buffer under a lock (microseconds); a
background thread does all I/O, so a request never waits for disk.

Durability (what a `kill -9` can lose). Every `flush_seconds` (default 0.2 s), or sooner
once `flush_rows` records wait, the thread converts the buffer to Arrow and appends it to
the spool, an Arrow IPC stream (append-only, one message per flush, written with plain
write(2): the kernel keeps it when the process dies). So a killed worker loses only what it
acknowledged since its last flush: at most `flush_seconds` (plus the flush or rotation in
progress) or `flush_rows` records. Power loss is not covered (no fsync). Rotation
(`rotate_rows` records or `rotate_seconds` since the spool's first record) writes the spool's
rows as Parquet under a hidden name, links it into place (the warehouse globs
`part-*.parquet` and never sees a half-written file) and deletes the spool.

Orphans. The owner holds an flock on its spool for the spool's whole life; a spool whose
lock nobody holds belongs to a dead process. `recover_orphans(root)` (run by every writer
when it starts, and callable by a reader such as the warehouse build) converts each orphan:
it reads the complete messages (a torn last message, the flush the kill interrupted, is
ignored), writes them under the name the owner would have used, and deletes the spool.
Names are fixed by the spool, so a spool whose owner died after linking some of its files,
or that two recoverers race for, is never counted twice: an existing file is kept as is.

A failing disk: a failed spool append or Parquet write keeps its records in memory and is
retried after a back-off (0.5 s doubling to `max_retry_seconds`); only records past
`max_buffer_rows` are dropped, and counted (`dropped`, `on_dropped`); every failed attempt
counts (`write_errors`, `on_write_error`); `on_written` gets the records each file holds.

GIL manners (the writer shares the GIL with its process's requests): buffered records are
tuples of atomic values, which the cyclic GC stops tracking; Arrow conversion runs a slice
of `_SLICE_ROWS` records at a time with the GIL released between slices.

Pure pyarrow (no flask): the service imports it, and so does the batch side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

PART_GLOB = "date=*/part-*.parquet"
SPOOL_DIR = ".spool"
SPOOL_SUFFIX = ".arrows"
_SLICE_ROWS = 256  # records converted per GIL hold in the writer thread (~1 ms)
_SLICE_PAUSE_SECONDS = 0.0005  # GIL released between slices: waiting requests run

R = TypeVar("R", bound=tuple[Any, ...])
RowsTable = Callable[[Sequence[Any]], pa.Table]


def part_files(root: Path) -> list[Path]:
    """Every complete log file under root (temporary files are hidden and never match)."""
    return sorted(root.glob(PART_GLOB)) if root.exists() else []


def tuple_rows_table(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """A table of `schema` from rows that are tuples of atomic values in schema order (the
    rows_table of every log whose records are flat: shadow, skew)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.Table.from_arrays(
        [pa.array(col, f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
    )


def sliced_table(rows: Sequence[Any], rows_table: RowsTable, schema: pa.Schema) -> pa.Table:
    """`rows_table` a slice at a time, sleeping between slices (see the module doc)."""
    parts = []
    for start in range(0, len(rows), _SLICE_ROWS):
        if start:
            time.sleep(_SLICE_PAUSE_SECONDS)
        parts.append(rows_table(rows[start : start + _SLICE_ROWS]))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _by_day(table: pa.Table, day_column: str) -> list[tuple[str, pa.Table]]:
    """The table split by the UTC day of day_column, days in order."""
    if table.num_rows == 0:
        return []
    days = pc.cast(table.column(day_column), pa.date32())  # the zone is UTC
    out = []
    for day in sorted(pc.unique(days).to_pylist()):
        out.append((day.isoformat(), table.filter(pc.equal(days, pa.scalar(day, pa.date32())))))
    return out


def write_parts(root: Path, stem: str, table: pa.Table, day_column: str = "ts") -> int:
    """Write table as `date=D/part-<stem>.parquet` per UTC day; a file already there (an
    earlier attempt, or the dead owner of a recovered spool) is kept, not written again.
    Returns the rows newly written; raises on failure (a later call completes the rest)."""
    written = 0
    for day, rows in _by_day(table, day_column):
        folder = root / f"date={day}"
        final = folder / f"part-{stem}.parquet"
        if final.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{stem}-{os.getpid()}-{threading.get_ident()}.parquet"
        try:
            pq.write_table(rows, tmp, compression="zstd")
            try:
                os.link(tmp, final)  # atomic: readers see the whole file or none
                written += rows.num_rows
            except FileExistsError:  # a racing recoverer linked the same rows first
                pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return written


def read_spool(path: Path) -> pa.Table | None:
    """The complete messages of a spool (a torn tail is ignored); None if it has no
    readable schema (killed before its first flush finished)."""
    batches = []
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError):
                    break  # the flush the kill interrupted: never acknowledged as durable
    except (pa.ArrowInvalid, OSError):
        return None
    return pa.Table.from_batches(batches, schema=schema)


def recover_orphans(root: Path, day_column: str = "ts") -> int:
    """Convert the spools under root whose owner is gone into part files; returns the
    records recovered. Safe to run at any time, by any number of processes at once."""
    spool_dir = Path(root) / SPOOL_DIR
    if not spool_dir.is_dir():
        return 0
    recovered = 0
    for path in sorted(spool_dir.glob(f"*{SPOOL_SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its owner rotated it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live owner (or another recoverer) holds it
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue
            except FileNotFoundError:
                continue  # deleted while we waited: done by someone else
            table = read_spool(path)
            if table is not None and table.num_rows:
                recovered += write_parts(Path(root), path.name.removesuffix(SPOOL_SUFFIX),
                                         table, day_column)  # fmt: skip
            path.unlink()
            log.warning("log %s: recovered orphan spool %s (%d records)", root, path.name,
                        0 if table is None else table.num_rows)  # fmt: skip
        except OSError as exc:
            log.error("log %s: could not recover %s (%s)", root, path.name, exc)
        finally:
            os.close(fd)
    return recovered


@dataclass
class _Spool:
    """One rotation in progress: its file (locked), and its rows as Arrow, kept in memory
    so rotation writes Parquet without reading the file back."""

    stem: str
    path: Path
    file: IO[bytes] | None
    writer: pa.ipc.RecordBatchStreamWriter | None
    started: float
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0

    def seal(self) -> None:
        """No more appends (rotation, or an append failed and left the stream unusable)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()  # releases the flock; the file is deleted after the Parquet
            self.file = None


class ParquetLogWriter(Generic[R]):
    """Buffers rows (tuples), spools them every flush interval, rotates them into Parquet.

    `schema` and `rows_table` (rows -> Arrow table of schema) are what one log differs in;
    `day_column` (a UTC timestamp) names the `date=` partition. Create it after the server
    forks (one per gunicorn worker): a thread does not survive fork(). `close()` writes
    everything that is left.
    """

    def __init__(
        self,
        root: Path,
        *,
        schema: pa.Schema,
        rows_table: RowsTable,
        name: str = "log",
        day_column: str = "ts",
        rotate_rows: int = 10_000,
        rotate_seconds: float = 60.0,
        flush_seconds: float = 0.2,
        flush_rows: int = 2_000,
        max_buffer_rows: int = 200_000,
        max_retry_seconds: float = 5.0,
        on_dropped: Callable[[int], None] | None = None,
        on_write_error: Callable[[], None] | None = None,
        on_written: Callable[[int], None] | None = None,
        warm_rows: Sequence[R] = (),
        recover: bool = True,
    ) -> None:
        self.root = Path(root)
        self.schema = schema
        self.rows_table = rows_table
        self.name = name
        self.day_column = day_column
        self.rotate_rows = max(1, rotate_rows)
        self.rotate_seconds = rotate_seconds
        self.flush_seconds = flush_seconds
        self.flush_rows = max(1, flush_rows)
        self.max_buffer_rows = max_buffer_rows
        self.max_retry_seconds = max_retry_seconds
        self.on_dropped = on_dropped
        self.on_write_error = on_write_error
        self.on_written = on_written
        self.dropped = 0
        self.write_errors = 0
        self.files_written = 0
        self.records_written = 0
        self.recovered = 0
        self._buffer: list[R] = []
        self._inflight = 0  # rows taken from the buffer, not yet in the spool (or requeued)
        self._spool: _Spool | None = None
        self._sealed: list[_Spool] = []  # rotations whose Parquet is not on disk yet
        self._token = secrets.token_hex(3)  # pid reuse must not reuse a name
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        if warm_rows:
            # The first conversion pays ~0.3 s of one-off pyarrow/timezone set-up; pay it
            # now, at start-up, not in the writer thread while requests are being served.
            rows_table(list(warm_rows))
        self._recover = recover
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()

    # --- the request side -------------------------------------------------------------

    def append(self, row: R) -> None:
        """Append one record; never blocks on I/O, never raises."""
        with self._lock:
            if self._closed or len(self._buffer) >= self.max_buffer_rows:
                self._drop(1)
                return
            self._buffer.append(row)
            if len(self._buffer) >= self.flush_rows:
                self._wake.notify()

    def extend(self, rows: Iterable[R]) -> int:
        """Append several records under one lock; returns how many were dropped."""
        rows = list(rows)
        with self._lock:
            room = 0 if self._closed else max(0, self.max_buffer_rows - len(self._buffer))
            self._buffer.extend(rows[:room])
            lost = len(rows) - min(room, len(rows))
            if lost:
                self._drop(lost)
            if len(self._buffer) >= self.flush_rows:
                self._wake.notify()
        return lost

    def has_room(self, count: int) -> bool:
        """Whether `count` more records would be buffered now, not dropped (a caller that
        must not acknowledge what it cannot log asks first)."""
        with self._lock:
            return not self._closed and len(self._buffer) + count <= self.max_buffer_rows

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything appended so far is in the spool (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._wake.notify()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer and not self._inflight:
                    return
                self._wake.notify()
            time.sleep(0.005)

    def close(self) -> None:
        """Stop the thread and write everything still buffered or spooled as Parquet."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def __enter__(self) -> ParquetLogWriter[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread -------------------------------------------------------------

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def _error(self, what: str, count: int, exc: BaseException) -> None:
        self.write_errors += 1
        if self.on_write_error is not None:
            self.on_write_error()
        log.error("%s: could not write %d records, will retry (%s; %s: %s)",
                  self.name, count, what, type(exc).__name__, exc)  # fmt: skip

    def _rotation_due(self, now: float) -> bool:
        s = self._spool
        return s is not None and (
            s.rows >= self.rotate_rows or now - s.started >= self.rotate_seconds
        )

    def _run(self) -> None:
        if self._recover:
            try:
                self.recovered = recover_orphans(self.root, self.day_column)
            except Exception:  # never let recovery stop this process's own log
                log.exception("%s: orphan recovery failed", self.name)
        backoff = 0.0
        last_flush = time.monotonic()
        while True:
            with self._lock:
                if backoff and not self._closed:
                    self._wake.wait(timeout=backoff)  # close() cuts a back-off short
                while not self._closed:
                    now = time.monotonic()
                    flush_due = bool(self._buffer) and (
                        len(self._buffer) >= self.flush_rows
                        or now - last_flush >= self.flush_seconds
                    )
                    if flush_due or self._sealed or self._rotation_due(now):
                        break
                    self._wake.wait(timeout=max(0.005, self.flush_seconds))
                room = self.rotate_rows - (self._spool.rows if self._spool else 0)
                batch, self._buffer = self._buffer[:room], self._buffer[room:]
                self._inflight = len(batch)  # flush() waits for these to reach the spool
                closing = self._closed and not self._buffer
            last_flush = time.monotonic()
            try:
                ok = self._spool_rows(batch) if batch else True
            finally:
                with self._lock:
                    self._inflight = 0
            if ok and (self._rotation_due(time.monotonic()) or closing):
                self._seal_current()
            ok = self._write_sealed() and ok
            if ok:
                backoff = 0.0
                if closing and self._spool is None and not self._sealed:
                    return
                continue
            if self._closed:  # the worker is going: one attempt is all it gets
                with self._lock:
                    lost = len(self._buffer) + sum(s.rows for s in self._sealed)
                    lost += self._spool.rows if self._spool else 0
                    self._buffer = []
                log.error("%s: %d records lost at exit", self.name, lost)
                self._drop(lost)
                for s in self._sealed + ([self._spool] if self._spool else []):
                    s.seal()
                return
            backoff = min(max(2 * backoff, 0.5), self.max_retry_seconds)

    def _open_spool(self) -> _Spool:
        self._seq += 1
        stem = f"{os.getpid()}-{self._token}-{self._seq:06d}"
        folder = self.root / SPOOL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        # Locked under a name recovery skips, then renamed: a recoverer never sees it
        # unlocked (it would take an empty live spool for an orphan).
        tmp = folder / f".new-{stem}"
        file = open(tmp, "wb", buffering=0)  # noqa: SIM115 - lives as long as the spool
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = folder / f"{stem}{SPOOL_SUFFIX}"
            os.rename(tmp, path)
            writer = pa.ipc.new_stream(file, self.schema)
        except BaseException:
            file.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return _Spool(stem, path, file, writer, time.monotonic())

    def _spool_rows(self, rows: list[R]) -> bool:
        """Append rows to the spool (opening one if needed); on failure they go back to the
        front of the buffer and the spool is sealed (its stream may be torn)."""
        try:
            table = sliced_table(rows, self.rows_table, self.schema)
        except Exception as exc:  # a bad record must not kill the thread: lose it, loudly
            log.error("%s: %d records could not be converted (%s)", self.name, len(rows), exc)
            self._drop(len(rows))
            return True
        try:
            if self._spool is None:
                self._spool = self._open_spool()
            assert self._spool.writer is not None
            self._spool.writer.write_table(table)
        except Exception as exc:
            self._error("spool", len(rows), exc)
            if self._spool is not None:
                self._seal_current()
            self._requeue(rows)
            return False
        self._spool.tables.append(table)
        self._spool.rows += len(rows)
        return True

    def _seal_current(self) -> None:
        if self._spool is not None:
            self._spool.seal()
            if self._spool.rows:
                self._sealed.append(self._spool)
            else:
                with contextlib.suppress(OSError):
                    self._spool.path.unlink()
            self._spool = None

    def _write_sealed(self) -> bool:
        """Parquet for every sealed spool, oldest first; False if one failed (kept)."""
        while self._sealed:
            s = self._sealed[0]
            table = pa.concat_tables(s.tables)
            try:
                written = write_parts(self.root, s.stem, table, self.day_column)
                with contextlib.suppress(FileNotFoundError):
                    s.path.unlink()
            except Exception as exc:  # a full disk must not kill the thread or the service
                self._error("parquet", s.rows, exc)
                return False
            self._sealed.pop(0)
            self.files_written += len(_by_day(table, self.day_column)) if written else 0
            self.records_written += written
            if self.on_written is not None and written:
                self.on_written(written)
        return True

    def _requeue(self, rows: list[R]) -> None:
        """Put records whose write failed back in front of the buffer, oldest first, within
        max_buffer_rows: what does not fit is the newest and is dropped (and counted)."""
        with self._lock:
            merged = rows + self._buffer
            overflow = len(merged) - self.max_buffer_rows
            if overflow > 0:
                merged = merged[: self.max_buffer_rows]
                self._drop(overflow)
            self._buffer = merged


def prune(root: Path, retention_days: int) -> list[str]:
    """Delete `date=` partitions older than retention_days before the newest one (relative
    to the data, never to now(), like `recsys batch prune`); the nightly warehouse build
    loads every file that is left, so this bounds its cost. Returns the removed dates."""
    days = sorted(p.name.removeprefix("date=") for p in root.glob("date=*") if p.is_dir())
    if not days:
        return []
    newest = dt.date.fromisoformat(days[-1])
    doomed = [d for d in days if (newest - dt.date.fromisoformat(d)).days > retention_days]
    for day in doomed:
        folder = root / f"date={day}"
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return doomed
