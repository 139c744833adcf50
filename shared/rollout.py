"""Canary rollouts: a published run served to a share of the users beside CURRENT, as an
experiment of the dedicated layer `rollout` (docs/experiments.md, "Canary rollouts").

A rollout IS an experiment in ART/experiments.json (arms `control`: no treatment, CURRENT;
`canary`: treatment bundle = the run), so the service needs nothing new: it serves, logs
and the warehouse records it like any other. This module only edits that file (through the
audited `experiments.write`) and keeps the rollout's history, one JSON line per event, in
ART/history/rollout_events.jsonl (the warehouse's `rollout_events` table). Deciding from
the traffic (statistics, warehouse rebuilds) is batch/rollout's job; no scipy here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared import experiments as exp
from shared.bundle import read_current, run_dir, verify_bundle
from shared.errors import UsageError

log = logging.getLogger(__name__)

LAYER = "rollout"
CONTROL, CANARY = "control", "canary"
EVENTS_FILE = Path("history") / "rollout_events.jsonl"
_LOCK_FILE = ".rollout.lock"
Action = Literal["started", "check_passed", "rolled_back", "promoted", "aborted"]
ACTIONS: tuple[str, ...] = ("started", "check_passed", "rolled_back", "promoted", "aborted")


@dataclass(frozen=True)
class Rollout:
    experiment: str
    run_id: str  # the canary run
    share: float


def parse_share(text: str) -> float:
    """'5%' or '0.05' -> 0.05. A bare number above 1 is refused rather than guessed: '5'
    could mean 5 % or a typo of 0.5."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--share {text!r}: give a percentage (5%) or a fraction (0.05)") from None
    if not 0.0 < value < 1.0:
        raise UsageError(f"--share {text!r}: the canary share must be above 0 and below 100%")
    return value


def running(file: exp.ExperimentsFile | None) -> Rollout | None:
    """The running rollout of the file (at most one: one running experiment per layer)."""
    for e in file.running if file is not None else []:
        if e.layer == LAYER:
            canary = e.arm(CANARY)
            if canary is not None and canary.treatment.bundle:
                return Rollout(e.name, canary.treatment.bundle, canary.share)
    return None


def current(artifacts: Path) -> Rollout | None:
    return running(exp.load(artifacts))


def require(artifacts: Path) -> Rollout:
    found = current(artifacts)
    if found is None:
        raise UsageError(f"no rollout is running in {artifacts} (start one with "
                         "`recsys rollout start RUN_ID --share 5% --artifacts ART`)")  # fmt: skip
    return found


@contextlib.contextmanager
def lock(artifacts: Path) -> Iterator[None]:
    """One rollout command at a time (a check deciding while someone promotes would act on
    a rollout that no longer runs). Its own file: experiments.write takes the file's lock."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with (artifacts / _LOCK_FILE).open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _free_name(file: exp.ExperimentsFile | None, run_id: str) -> str:
    """canary-<run_id>, with -2, -3 ... when an earlier (stopped) rollout of the same run
    keeps the name in the file (names and salts must stay unique there)."""
    base = f"canary-{run_id}"
    if len(base) > 60 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", base):
        raise UsageError(f"run id {run_id!r} cannot name a rollout experiment "
                         "(at most 53 characters: letters, digits, '.', '_', '-')")  # fmt: skip
    taken = {e.name for e in file.experiments} if file is not None else set()
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def start(artifacts: Path, run_id: str, share: float, who: str | None = None) -> Rollout:
    """Declare the rollout of `run_id` at `share`: the run must be a published bundle that
    verifies (checksums included), other than CURRENT, with no other rollout running."""
    with lock(artifacts):
        live = read_current(artifacts)
        if live is None:
            raise UsageError(f"no CURRENT in {artifacts}: nothing to compare a canary with "
                             "(publish the first run directly)")  # fmt: skip
        if run_id == live:
            raise UsageError(f"run {run_id!r} is CURRENT already: nothing to roll out")
        verify_bundle(run_dir(artifacts, run_id))  # BundleError (exit 6) names what is wrong
        file = exp.load(artifacts)
        other = running(file)
        if other is not None:
            raise UsageError(f"rollout {other.experiment} (run {other.run_id}) is already "
                             "running: promote or abort it first (one rollout at a time)")  # fmt: skip
        name = _free_name(file, run_id)
        declared = [e.model_dump() for e in (file.experiments if file else [])]
        declared.append({
            "name": name, "layer": LAYER, "salt": f"rollout:{name}", "status": "running",
            "arms": [{"name": CONTROL, "share": 1.0 - share, "treatment": {}},
                     {"name": CANARY, "share": share, "treatment": {"bundle": run_id}}],
        })  # fmt: skip
        # Validated as a whole: another running experiment that sets `bundle` is refused here
        # with the field named, before anything is written.
        new = exp.parse(json.dumps({"experiments": declared}), "rollout")
        exp.write(artifacts, new, who, reason=f"rollout start {run_id} at {share:.2%}")
        rollout = Rollout(name, run_id, share)
        record(artifacts, rollout, "started",
               f"canary {run_id} at {share:.2%} of users vs CURRENT {live}",
               {"share": share, "control_run": live}, who)  # fmt: skip
        return rollout


def stop(artifacts: Path, rollout: Rollout, action: Action, reason: str,
         values: Mapping[str, Any] | None = None, who: str | None = None) -> None:  # fmt: skip
    """Stop the rollout's experiment (its users are served CURRENT at the service's next
    poll) with `reason` in the audit line, and record the event. The caller holds lock()."""
    file = exp.load(artifacts)
    if running(file) != rollout or file is None:
        raise UsageError(f"rollout {rollout.experiment} is no longer running")
    stopped = [e.model_dump() | ({"status": "stopped"} if e.name == rollout.experiment else {})
               for e in file.experiments]  # fmt: skip
    new = exp.parse(json.dumps({"experiments": stopped}), "rollout")
    exp.write(artifacts, new, who, reason=f"rollout {action}: {reason}")
    record(artifacts, rollout, action, reason, values, who)


# ---- the history -----------------------------------------------------------------------


def events_path(artifacts: Path) -> Path:
    return artifacts / EVENTS_FILE


def record(artifacts: Path, rollout: Rollout, action: Action, reason: str,
           values: Mapping[str, Any] | None = None, who: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Append one event (fsynced: a rollback must never be forgotten) and log it."""
    entry = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": rollout.run_id, "experiment": rollout.experiment, "action": action,
        "reason": reason, "values": _finite(dict(values or {})),
        "who": who or os.environ.get("USER") or "unknown",
    }  # fmt: skip
    path = events_path(artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    level = logging.WARNING if action in ("rolled_back", "aborted") else logging.INFO
    log.log(level, "rollout %s %s: %s", rollout.experiment, action, reason)
    return entry


def _finite(value: Any) -> Any:
    """NaN/inf -> None, recursively: the history is strict JSON (the warehouse casts it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_events(artifacts: Path) -> list[dict[str, Any]]:
    """Every event, oldest first. A torn last line (a crash mid-append) is skipped, never
    fatal: the history must not stop a check or a warehouse build."""
    path = events_path(artifacts)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("%s: skipping an unreadable line", path)
            continue
        if isinstance(entry, dict) and entry.get("action") in ACTIONS:
            out.append(entry)
    return out


def started_at(artifacts: Path, rollout: Rollout) -> dt.datetime | None:
    """When the rollout started (its `started` event); None when it has none (declared by
    hand with `recsys experiment set`)."""
    for entry in reversed(read_events(artifacts)):
        if entry["experiment"] == rollout.experiment and entry["action"] == "started":
            return dt.datetime.fromisoformat(str(entry["ts"]))
    return None
