"""The experiments a worker applies: ART/experiments.json and the bundles its arms serve.

Read at start and after every bundle reload attempt (the store's poll, an admin reload, a
sibling's epoch), so experiments change on the same cadence as bundles. A file that fails
validation, or names an arm bundle that fails the same verified load as CURRENT's, is
refused as a whole: one log line and a counter per refused content, and the last good
file (with its bundles) keeps serving. A missing file means no experiment runs.

What requests read is one immutable snapshot (file + arm bundles), replaced by a single
reference assignment, so a request never sees a file with another file's bundles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from online import metrics
from online.bundle_loader import LoadedBundle
from online.bundle_store import BundleStore
from online.config import ServiceConfig
from shared import experiments as exp
from shared.errors import ExperimentsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    file: exp.ExperimentsFile | None
    bundles: Mapping[str, LoadedBundle] = field(default_factory=dict)  # arm run id -> bundle
    content: bytes | None = None  # the accepted file's bytes (None: no file)


class ExperimentStore:
    def __init__(self, config: ServiceConfig, bundles: BundleStore) -> None:
        self.path = exp.experiments_path(config.artifacts)
        self._bundles = bundles
        self._snapshot = Snapshot(None)
        self._lock = threading.Lock()
        self._refused: bytes | None = None  # content refused last (logged once per content)
        self.last_error: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self) -> None:
        """Re-read the file; accept it (loading its arms' bundles) or keep the last good."""
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        try:
            content: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            content = None
        except OSError as exc:
            return self._refuse(None, f"cannot read {self.path}: {exc}")
        current = self._snapshot
        if content == current.content:
            return  # the file this worker already serves (or still none)
        if content is None:
            self._snapshot = Snapshot(None)
            self._refused, self.last_error = None, None
            metrics.EXPERIMENT_RELOADS.labels("removed").inc()
            metrics.EXPERIMENTS_VERSION.set(0)
            log.warning("experiments file removed: no experiment runs", extra={"path": str(self.path)})
            return
        if content == self._refused:
            return  # refused already; logged once, retried when the file changes
        try:
            file = exp.parse(content, str(self.path))
            bundles = self._arm_bundles(file, current)
        except Exception as exc:  # a bad file or an unusable arm bundle: keep the last good
            return self._refuse(content, str(exc))
        self._snapshot = Snapshot(file, bundles, content)
        self._refused, self.last_error = None, None
        metrics.EXPERIMENT_RELOADS.labels("loaded").inc()
        metrics.EXPERIMENTS_VERSION.set(file.version)
        log.info("experiments loaded", extra={"version": file.version,
                                              "running": [e.name for e in file.running],
                                              "arm_bundles": sorted(bundles)})  # fmt: skip

    def _arm_bundles(self, file: exp.ExperimentsFile, held: Snapshot) -> dict[str, LoadedBundle]:
        """The bundles the running arms serve: kept if held already, the served CURRENT
        object when it is that run, else loaded and verified like CURRENT."""
        out: dict[str, LoadedBundle] = {}
        serving = self._bundles.current
        for run_id in sorted(file.arm_bundles()):
            if run_id in held.bundles:
                out[run_id] = held.bundles[run_id]
            elif serving is not None and serving.run_id == run_id:
                out[run_id] = serving
            else:
                try:
                    out[run_id] = self._bundles.load_run(run_id)
                except Exception as exc:
                    raise ExperimentsError(f"arm bundle {run_id!r} refused: {exc}") from exc
        return out

    def _refuse(self, content: bytes | None, error: str) -> None:
        self._refused = content
        self.last_error = error
        metrics.EXPERIMENT_RELOADS.labels("refused").inc()
        served = self._snapshot.file
        log.error("experiments file refused; the last good one keeps serving",
                  extra={"path": str(self.path), "error": error,
                         "serving_version": served.version if served else None})  # fmt: skip

    def assign(self, unit: str | None, forced: Mapping[str, str] | None = None
               ) -> tuple[list[exp.Assignment], Snapshot]:  # fmt: skip
        """The unit's arms under the served file, and the snapshot they came from (whose
        bundles the request must use)."""
        snapshot = self._snapshot  # read once: a concurrent swap cannot split a request
        found = exp.assign(snapshot.file, unit, forced)
        for a in found:
            metrics.EXPERIMENT_ASSIGNED.labels(a.experiment, a.arm).inc()
        return found, snapshot
