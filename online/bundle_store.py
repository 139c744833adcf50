"""The bundle a worker serves, and how it is replaced without failing a request.

A new bundle is loaded and validated beside the old one (checksums, shapes, contents, a
smoke query), then swapped in with one reference assignment. A request reads
`store.current` once at its start, so requests in flight finish on the bundle they started
with. A refused bundle is logged, counted and reported by /readyz (`refusal`); the old one
keeps serving.

Each accepted bundle is remembered in ART/accepted/<server_id> (shared.bundle). A worker
that starts with nothing to serve while CURRENT names a bundle it refuses (a bad publish,
a missing or half-copied run) serves that last accepted bundle instead of answering 503,
as its siblings that were running before the bad publish still do, and keeps reporting the
refusal.

Workers learn about a new bundle by polling ART/CURRENT every `reload_poll_seconds`, and
about an admin reload in a sibling worker through an epoch file in the runtime directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from online import metrics, retrieval
from online.bundle_loader import LoadedBundle, load_bundle
from online.config import ServiceConfig
from online.scoring import ScoreInput
from shared.bundle import accepted_file, read_accepted, read_current, run_dir, write_accepted
from shared.errors import BundleError

log = logging.getLogger(__name__)

EPOCH_FILE = "reload_epoch"
_TICK_SECONDS = 0.5


@dataclass(frozen=True)
class ReloadResult:
    status: str  # loaded | unchanged | refused
    run_id: str | None
    serving: str | None
    error: str | None = None


@dataclass(frozen=True)
class Refusal:
    """The bundle CURRENT names and this worker refused (None: CURRENT itself was missing or
    unreadable), and why: what /readyz reports while the worker serves another one."""

    run_id: str | None
    error: str


def default_server_id(port: int) -> str:
    """<hostname>-<port>, with any character a file name should not hold replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{socket.gethostname()}-{port}").lstrip(".-_") or (
        f"server-{port}"
    )


class BundleStore:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.server_id = config.server_id or default_server_id(config.port)
        self._current: LoadedBundle | None = None
        self._load_lock = threading.Lock()  # serialises loads; reads never take it
        self._started = False
        self._refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._epoch_seen = self._read_epoch()
        self.last_error: str | None = None
        # Set while CURRENT names a bundle this worker refused; cleared once it serves what
        # CURRENT names (loaded, or CURRENT pointed back at the served one).
        self.refusal: Refusal | None = None
        # Run after every reload attempt (start, poll, admin, sibling epoch), outside the
        # load lock: the experiments file is read on the same cadence as CURRENT.
        self._hooks: list[Callable[[], None]] = []

    def add_reload_hook(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def _run_hooks(self) -> None:
        for hook in self._hooks:
            try:
                hook()
            except Exception:  # a hook's failure must not fail the bundle reload
                log.exception("reload hook failed")

    def load_run(self, run_id: str) -> LoadedBundle:
        """Verify and load another published run with the same checks as CURRENT's (an
        experiment arm's bundle); BundleError or any load error when it is unusable."""
        return self._load(run_dir(self.config.artifacts, run_id))

    @property
    def current(self) -> LoadedBundle | None:
        return self._current

    def ensure_started(self) -> None:
        """Load the bundle and start the watcher once per process (after the fork)."""
        if self._started:
            return
        with self._load_lock:
            if self._started:
                return
            self._started = True
        self.reload()
        if self.config.reload_poll_seconds > 0 or self.config.runtime_dir is not None:
            threading.Thread(target=self._watch, name="bundle-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def reload(self, force: bool = False) -> ReloadResult:
        """Load the bundle CURRENT names if it is new; force retries one refused before."""
        with self._load_lock:
            result = self._reload_locked(force)
        self._run_hooks()
        return result

    def _reload_locked(self, force: bool) -> ReloadResult:
        artifacts = self.config.artifacts
        serving = self._current.run_id if self._current else None
        try:
            run_id = read_current(artifacts)
        except OSError as exc:
            return self._fall_back(self._refuse(None, f"cannot read CURRENT: {exc}"))
        if run_id is None:
            return self._fall_back(
                self._refuse(None, f"no published bundle: {artifacts}/CURRENT is missing")
            )
        if run_id == serving:
            self.refusal = None  # CURRENT names the served bundle again (a rollback)
            return ReloadResult("unchanged", run_id, serving)
        if run_id in self._refused and not force:
            return ReloadResult("refused", run_id, serving, self._refused[run_id])
        started = time.perf_counter()
        try:
            bundle = self._load(run_dir(artifacts, run_id))
        except Exception as exc:  # any failure refuses the bundle; the old one keeps serving
            return self._fall_back(self._refuse(run_id, str(exc)))
        self._swap(bundle, started)
        self._refused.pop(run_id, None)
        self.last_error = None
        self.refusal = None
        self._remember(run_id)
        return ReloadResult("loaded", run_id, run_id)

    def _swap(self, bundle: LoadedBundle, started: float) -> None:
        previous = self._current
        self._current = bundle  # the swap: one reference assignment
        metrics.RELOADS.labels("loaded").inc()
        metrics.BUNDLE_LOAD_SECONDS.set(time.perf_counter() - started)
        metrics.BUNDLE_PUBLISHED.set(published_epoch(bundle.manifest.created_at))
        metrics.set_bundle_info(
            bundle.run_id,
            bundle.scorer.name,
            (previous.run_id, previous.scorer.name) if previous else None,
        )
        log.info(
            "bundle swapped",
            extra={"run_id": bundle.run_id, "previous": previous.run_id if previous else None},
        )

    def _refuse(self, run_id: str | None, error: str) -> ReloadResult:
        if run_id is not None:
            self._refused[run_id] = error
        self.last_error = error
        self.refusal = Refusal(run_id, error)
        metrics.RELOADS.labels("refused").inc()
        log.error("bundle refused", extra={"run_id": run_id, "error": error})
        serving = self._current.run_id if self._current else None
        return ReloadResult("refused", run_id, serving, error)

    # --- the last accepted bundle ---------------------------------------------------------

    def _remember(self, run_id: str) -> None:
        """Record run_id as this server's last accepted bundle. A failure to write it costs
        only the fallback of a later restart, never this swap: logged, not raised."""
        try:
            write_accepted(self.config.artifacts, self.server_id, run_id)
        except OSError as exc:
            log.warning(
                "cannot record the accepted bundle",
                extra={"run_id": run_id, "path": str(self._accepted_path), "error": str(exc)},
            )

    @property
    def _accepted_path(self) -> Path:
        return accepted_file(self.config.artifacts, self.server_id)

    def _fall_back(self, refused: ReloadResult) -> ReloadResult:
        """With nothing served yet (a worker starting, or restarted, after a bad publish),
        serve this server's last accepted bundle; the refusal stays reported."""
        if self._current is not None:
            return refused
        try:
            accepted = read_accepted(self.config.artifacts, self.server_id)
        except OSError as exc:
            log.error("cannot read the accepted-bundle record",
                      extra={"path": str(self._accepted_path), "error": str(exc)})  # fmt: skip
            return refused
        if accepted is None or accepted == refused.run_id:
            return refused  # nothing else to serve: 503 with the refusal's reason
        started = time.perf_counter()
        try:
            bundle = self._load(run_dir(self.config.artifacts, accepted))
        except Exception as exc:  # the record's run is gone or broken too: still nothing
            error = f"{refused.error}; last accepted bundle {accepted} refused too: {exc}"
            self.last_error = error
            self.refusal = Refusal(refused.run_id, error)
            metrics.RELOADS.labels("refused").inc()
            log.error("last accepted bundle refused", extra={"run_id": accepted, "error": str(exc)})
            return ReloadResult("refused", refused.run_id, None, error)
        self._swap(bundle, started)
        log.warning(
            "serving the last accepted bundle: CURRENT's was refused",
            extra={"run_id": accepted, "refused": refused.run_id, "error": refused.error},
        )
        return ReloadResult("refused", refused.run_id, accepted, refused.error)

    def _load(self, path: Path) -> LoadedBundle:
        cfg = self.config
        bundle = load_bundle(path, verify_checksums=cfg.verify_checksums,
                             cache_size=cfg.cache_size, scored_cache_size=cfg.scored_cache_size)
        if bundle.scorer_fallback:
            metrics.ERRORS.labels("ranker_unusable").inc()
        smoke_query(bundle)
        return bundle

    # --- watching for new bundles -------------------------------------------------------

    def _read_epoch(self) -> str | None:
        if self.config.runtime_dir is None:
            return None
        try:
            return (self.config.runtime_dir / EPOCH_FILE).read_text()
        except OSError:
            return None

    def announce_reload(self) -> None:
        """Tell sibling workers that an admin asked for a reload."""
        if self.config.runtime_dir is None:
            return
        epoch = f"{time.time_ns()}-{os.getpid()}"
        tmp = self.config.runtime_dir / f".{EPOCH_FILE}.{os.getpid()}"
        tmp.write_text(epoch)
        os.replace(tmp, self.config.runtime_dir / EPOCH_FILE)
        self._epoch_seen = epoch

    def _watch(self) -> None:
        poll = self.config.reload_poll_seconds
        next_poll = time.monotonic() + poll
        while not self._stop.wait(_TICK_SECONDS):
            try:
                epoch = self._read_epoch()
                if epoch is not None and epoch != self._epoch_seen:
                    self._epoch_seen = epoch
                    self.reload(force=True)
                elif poll > 0 and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + poll
                    self.reload()
            except Exception:  # the watcher must outlive any single bad attempt
                log.exception("bundle watcher error")


def smoke_query(bundle: LoadedBundle) -> None:
    """One real retrieval + scoring call on the new bundle before it may serve."""
    if not bundle.user_index:
        return
    user_idx = next(iter(bundle.user_index.values()))
    items, masks = retrieval.candidates(
        bundle, user_idx, np.empty(0, np.int32), ann_k=10, recent_k=10, limit=50
    )
    if not len(items):
        return
    vector = np.asarray(bundle.user_factors[user_idx], dtype=np.float32)
    scores = bundle.scorer.score(
        ScoreInput(user_idx, vector, np.empty(0, np.int32), None, None, items, masks)
    )
    if len(scores) != len(items) or not np.all(np.isfinite(scores)):
        raise BundleError(f"bundle {bundle.run_id}: smoke query produced bad scores")


def published_epoch(created_at: str) -> float:
    """The manifest's created_at (ISO 8601; naive = UTC) as epoch seconds, 0 if unreadable."""
    try:
        ts = dt.datetime.fromisoformat(created_at)
    except ValueError:
        return 0.0
    return (ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).timestamp()
