"""The served-request log: what the online service answered, as Parquet for the warehouse.

Layout: `ART/served_log/date=YYYY-MM-DD/part-<pid>-<seq>.parquet`, one file per flush and
UTC day. Each file is written under a hidden temporary name and then linked into place, so
the nightly warehouse build (which globs `part-*.parquet`) never reads a half-written file,
and two processes (gunicorn workers) never write the same name.

`RequestLogWriter.log()` only appends to an in-memory buffer under a lock (microseconds);
a background thread writes the files, so a request never waits for disk. If the disk is
slower than the traffic the buffer is bounded and excess records are dropped and counted
(`dropped`) rather than blocking requests or growing without limit.

A write that fails (disk full, the directory briefly unusable) loses nothing by itself: the
records not yet on disk go back to the front of the buffer and are written again after a
back-off (0.5 s doubling to `max_retry_seconds`), so only a failure that outlasts the
buffer's bound drops records, and those are counted. Files already written by a
half-failed flush are not written twice. `on_dropped` / `on_write_error` let the service
export both as metrics (shared/ stays free of the metrics library).

The writer shares the GIL with the requests of its process, so it is built not to stall
them: the buffer holds each record as a flat tuple of strings and numbers, which the cyclic
garbage collector stops tracking after its first pass (a buffer of records as objects was
~20 000 tracked objects that every full collection walked, with the GIL held); and a
buffer is converted to Arrow a slice of `_SLICE_ROWS` records at a time, with the GIL
released between slices, so a request waits at most one slice (~1 ms) for it, never the
whole conversion (60-85 ms for 10 000 records).

Pure pyarrow (no flask): the service imports it, and so does the batch side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SERVED_LOG_DIR = "served_log"
PART_GLOB = "date=*/part-*.parquet"

ITEM_TYPE = pa.struct(
    [("item_id", pa.string()), ("rank", pa.int32()), ("score", pa.float32())]
)
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("user_id", pa.string()),  # None for anonymous requests
        ("bundle", pa.string()),  # run id of the bundle that answered
        ("served_by", pa.string()),  # rerank | precomputed | popular_segment | popular_global
        ("fallback_reason", pa.string()),  # None when the full path answered
        ("items", pa.list_(ITEM_TYPE)),
        ("latency_ms", pa.float64()),
        ("endpoint", pa.string()),
    ]
)


@dataclass(slots=True)
class ServedRequest:
    request_id: str
    ts: dt.datetime  # timezone-aware UTC
    user_id: str | None
    bundle: str | None
    served_by: str
    fallback_reason: str | None
    items: Sequence[tuple[str, int, float]]  # (item_id, rank, score)
    latency_ms: float
    endpoint: str = "recommend"


# A record as the buffer holds it: ServedRequest's fields in order, items as a tuple.
_Row = tuple[str, dt.datetime, str | None, str | None, str, str | None,
             tuple[tuple[str, int, float], ...], float, str]  # fmt: skip
_SLICE_ROWS = 256  # records converted per GIL hold in the writer thread (~1 ms)
_SLICE_PAUSE_SECONDS = 0.0005  # GIL released between slices: waiting requests run


def _row(r: ServedRequest) -> _Row:
    """The record as a tuple of atomic values only: untracked by the GC after one pass."""
    return (r.request_id, r.ts, r.user_id, r.bundle, r.served_by, r.fallback_reason,
            tuple(r.items), float(r.latency_ms), r.endpoint)  # fmt: skip


def to_table(records: Sequence[ServedRequest]) -> pa.Table:
    """The records as one Arrow table of SCHEMA."""
    return _rows_table([_row(r) for r in records])


def _rows_table(rows: Sequence[_Row]) -> pa.Table:
    """Columnar build: flat item columns plus list offsets, no per-item Python dicts (the
    dict-per-item version held the GIL ~40 µs per request)."""
    offsets = [0]
    item_ids: list[str] = []
    ranks: list[int] = []
    scores: list[float] = []
    for r in rows:
        if r[6]:
            ids, rks, scs = zip(*r[6], strict=True)  # one C-level transpose per request
            item_ids.extend(ids)
            ranks.extend(rks)
            scores.extend(scs)
        offsets.append(len(item_ids))
    items = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [
                pa.array(item_ids, pa.string()),
                pa.array(ranks, pa.int32()),
                pa.array(scores, pa.float32()),
            ],
            fields=list(ITEM_TYPE),
        ),
    )
    request_id, ts, user_id, bundle, served_by, reason, _, latency, endpoint = (
        zip(*rows, strict=True) if rows else ((),) * 9
    )
    columns = [
        pa.array(request_id, pa.string()),
        pa.array(ts, SCHEMA.field("ts").type),
        pa.array(user_id, pa.string()),
        pa.array(bundle, pa.string()),
        pa.array(served_by, pa.string()),
        pa.array(reason, pa.string()),
        items,
        pa.array(latency, pa.float64()),
        pa.array(endpoint, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _sliced_table(rows: Sequence[_Row]) -> pa.Table:
    """`_rows_table` a slice at a time, sleeping between slices (see the module doc)."""
    parts = []
    for start in range(0, len(rows), _SLICE_ROWS):
        if start:
            time.sleep(_SLICE_PAUSE_SECONDS)
        parts.append(_rows_table(rows[start : start + _SLICE_ROWS]))
    return pa.concat_tables(parts) if parts else empty_table()


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def log_dir(artifacts: Path) -> Path:
    return artifacts / SERVED_LOG_DIR


def part_files(root: Path) -> list[Path]:
    """Every complete log file under root (temporary files are hidden and never match)."""
    return sorted(root.glob(PART_GLOB)) if root.exists() else []


@dataclass
class RequestLogWriter:
    """Buffers served requests and writes rotating Parquet files from a background thread.

    A file is written when the buffer holds `rotate_rows` records or its oldest record is
    `rotate_seconds` old; `close()` (call it at worker exit) writes what is left. Create it
    after the server forks (one per gunicorn worker): a thread does not survive fork().
    """

    root: Path
    rotate_rows: int = 10_000
    rotate_seconds: float = 60.0
    max_buffer_rows: int = 200_000
    max_retry_seconds: float = 5.0
    # Called (from the writer thread or log()) with the number of records dropped, and
    # once per failed write attempt: the service counts them in /metrics.
    on_dropped: Callable[[int], None] | None = None
    on_write_error: Callable[[], None] | None = None
    dropped: int = 0
    write_errors: int = 0
    files_written: int = 0
    _buffer: list[_Row] = field(default_factory=list, repr=False)
    _first_at: float | None = field(default=None, repr=False)
    _seq: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _wake: threading.Condition = field(init=False, repr=False)
    _closed: bool = field(default=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        # The first conversion pays ~0.3 s of one-off pyarrow/timezone set-up; pay it now,
        # at start-up, not in the writer thread while requests are being served.
        to_table([ServedRequest("warm-up", dt.datetime.now(dt.UTC), None, None, "", None,
                                [("", 1, 0.0)], 0.0)])  # fmt: skip
        self._wake = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def log(self, record: ServedRequest) -> None:
        """Append one record; never blocks on I/O, never raises."""
        with self._lock:
            if self._closed or len(self._buffer) >= self.max_buffer_rows:
                self._drop(1)
                return
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(_row(record))
            if len(self._buffer) >= self.rotate_rows:
                self._wake.notify()

    def close(self) -> None:
        """Stop the thread and write everything still buffered."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def __enter__(self) -> RequestLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _due(self) -> bool:
        if not self._buffer:
            return False
        age = time.monotonic() - (self._first_at or 0.0)
        return len(self._buffer) >= self.rotate_rows or age >= self.rotate_seconds

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def _run(self) -> None:
        backoff = 0.0  # seconds to wait before the next attempt after a failed write
        while True:
            with self._lock:
                if backoff and not self._closed:
                    self._wake.wait(timeout=backoff)  # close() cuts a back-off short
                while not self._closed and not self._due():
                    # Wake at least every second to check the age of the oldest record.
                    self._wake.wait(timeout=min(1.0, max(self.rotate_seconds, 0.01)))
                batch, self._buffer = self._buffer, []
                self._first_at = None
                closing = self._closed
            unwritten = self._write(batch) if batch else []
            if unwritten:
                backoff = min(max(2 * backoff, 0.5), self.max_retry_seconds)
                if closing:  # the worker is going: one attempt is all it gets
                    log.error("request log: %d records lost at exit", len(unwritten))
                    self._drop(len(unwritten))
                    return
                self._requeue(unwritten)
                continue
            backoff = 0.0
            if closing:
                return

    def _requeue(self, rows: list[_Row]) -> None:
        """Put records whose write failed back in front of the buffer, oldest first, within
        max_buffer_rows: what does not fit is the newest and is dropped (and counted)."""
        with self._lock:
            merged = rows + self._buffer
            overflow = len(merged) - self.max_buffer_rows
            if overflow > 0:
                merged = merged[: self.max_buffer_rows]
                self._drop(overflow)
            self._buffer = merged
            # The retried records are due at once (their age is what it was).
            self._first_at = time.monotonic() - self.rotate_seconds

    def _write(self, batch: list[_Row]) -> list[_Row]:
        """Write batch as files of at most rotate_rows rows per UTC day; returns the records
        of the files that could not be written (empty when all are on disk)."""
        by_day: dict[str, list[_Row]] = {}
        for r in batch:
            by_day.setdefault(r[1].astimezone(dt.UTC).date().isoformat(), []).append(r)
        step = max(1, self.rotate_rows)
        chunks = [
            (self.root / f"date={day}", records[start : start + step])
            for day, records in sorted(by_day.items())
            # A burst larger than rotate_rows still gives files of at most rotate_rows rows.
            for start in range(0, len(records), step)
        ]
        for done, (folder, records) in enumerate(chunks):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._write_file(folder, records)
            except Exception as exc:  # a full disk must not kill the thread or the service
                left = [r for _, rows in chunks[done:] for r in rows]
                self.write_errors += 1
                if self.on_write_error is not None:
                    self.on_write_error()
                log.error("request log: could not write %d records, will retry (%s: %s)",
                          len(left), type(exc).__name__, exc)  # fmt: skip
                return left
        return []

    def _write_file(self, folder: Path, records: list[_Row]) -> None:
        tmp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}.parquet"
        try:
            pq.write_table(_sliced_table(records), tmp, compression="zstd")
            while True:  # a restarted process may reuse a pid: never overwrite a file
                self._seq += 1
                final = folder / f"part-{os.getpid()}-{self._seq:06d}.parquet"
                try:
                    os.link(tmp, final)
                    break
                except FileExistsError:
                    continue
        finally:
            # Hidden either way, but a failed attempt must not leave one per retry.
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.files_written += 1


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
