"""The bundle a worker serves, and how it is replaced without failing a request.

A new bundle is loaded and validated beside the old one (checksums, shapes, a smoke query),
then swapped in with one reference assignment. A request reads `store.current` once at its
start, so requests in flight finish on the bundle they started with. A refused bundle is
logged and counted; the old one keeps serving.

Workers learn about a new bundle by polling ART/CURRENT every `reload_poll_seconds`, and
about an admin reload in a sibling worker through an epoch file in the runtime directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from online import metrics, retrieval
from online.bundle_loader import LoadedBundle, load_bundle
from online.config import ServiceConfig
from online.scoring import ScoreInput
from shared.bundle import read_current, run_dir
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


class BundleStore:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._current: LoadedBundle | None = None
        self._load_lock = threading.Lock()  # serialises loads; reads never take it
        self._started = False
        self._refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._epoch_seen = self._read_epoch()
        self.last_error: str | None = None

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
            return self._reload_locked(force)

    def _reload_locked(self, force: bool) -> ReloadResult:
        artifacts = self.config.artifacts
        serving = self._current.run_id if self._current else None
        try:
            run_id = read_current(artifacts)
        except OSError as exc:
            return self._refuse(None, f"cannot read CURRENT: {exc}")
        if run_id is None:
            return self._refuse(None, f"no published bundle: {artifacts}/CURRENT is missing")
        if run_id == serving:
            return ReloadResult("unchanged", run_id, serving)
        if run_id in self._refused and not force:
            return ReloadResult("refused", run_id, serving, self._refused[run_id])
        started = time.perf_counter()
        try:
            bundle = self._load(run_dir(artifacts, run_id))
        except Exception as exc:  # any failure refuses the bundle; the old one keeps serving
            return self._refuse(run_id, str(exc))
        previous = self._current
        self._current = bundle  # the swap: one reference assignment
        self._refused.pop(run_id, None)
        self.last_error = None
        metrics.RELOADS.labels("loaded").inc()
        metrics.BUNDLE_LOAD_SECONDS.set(time.perf_counter() - started)
        metrics.set_bundle_info(
            bundle.run_id,
            bundle.scorer.name,
            (previous.run_id, previous.scorer.name) if previous else None,
        )
        log.info("bundle swapped", extra={"run_id": run_id, "previous": serving})
        return ReloadResult("loaded", run_id, run_id)

    def _refuse(self, run_id: str | None, error: str) -> ReloadResult:
        if run_id is not None:
            self._refused[run_id] = error
        self.last_error = error
        metrics.RELOADS.labels("refused").inc()
        log.error("bundle refused", extra={"run_id": run_id, "error": error})
        serving = self._current.run_id if self._current else None
        return ReloadResult("refused", run_id, serving, error)

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
