"""A/B experiments: the declaration file `ART/experiments.json`, sticky assignment, and its
audited, versioned write (docs/experiments.md).

An experiment lives in a layer; a user is in exactly one arm of every running experiment,
chosen by `bucket = blake2b("{salt}:{unit}") mod 10_000` over the arms' cumulative shares.
Each experiment hashes with its own salt, so arms of experiments in different layers are
independent; within a layer at most one experiment runs at a time (a second would see the
same users). A service setting belongs to one layer: two running experiments may not both
set it, so the treatments of a user's arms never disagree and merge without precedence.

Shared by the service (online/experiments.py) and the CLI (shared/experiments_cli.py): no
Flask here, only pydantic and the standard library.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.bundle import run_dir
from shared.bundle_layout import MANIFEST
from shared.errors import ExperimentsError

EXPERIMENTS_FILE = "experiments.json"
AUDIT_FILE = "experiments_audit.jsonl"
_LOCK_FILE = ".experiments.lock"
BUCKETS = 10_000
SHARE_TOLERANCE = 1e-9
# The scorers the service can run (online/scoring.py names), plus "none": no re-rank, the
# bundle's precomputed list as it is.
SCORERS = ("onnx-int8", "onnx-fp32", "als-dot", "fused", "none")
ScorerName = Literal["onnx-int8", "onnx-fp32", "als-dot", "fused", "none"]
# Names travel in the X-Recsys-Arm header (`experiment=arm, ...`) and in the warehouse:
# no '=', ',' or spaces.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
RunId = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                         pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]  # fmt: skip


class _Strict(BaseModel):
    # A misspelt key ("shares", "scorrer") is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Treatment(_Strict):
    """What an arm changes for its users; every field unset (the empty object) = control."""

    bundle: RunId | None = Field(None, description="serve this published run id")
    scorer: ScorerName | None = Field(None, description="re-rank scorer (none: no re-rank)")
    ann_k: int | None = Field(None, ge=1, le=2000, description="neighbours per ANN query")
    diversity: bool | None = Field(None, description="the genre cap on the row")
    realtime_recents: bool | None = Field(None, description="use the real-time store's state")

    @property
    def settings(self) -> dict[str, object]:
        """The fields this treatment sets."""
        return self.model_dump(exclude_none=True)


class Arm(_Strict):
    name: Name
    share: float = Field(ge=0.0, le=1.0)
    treatment: Treatment = Field(default_factory=Treatment)


class Experiment(_Strict):
    name: Name
    layer: Name
    salt: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    status: Literal["running", "stopped"]
    arms: list[Arm] = Field(min_length=1, max_length=100)
    # Upper bucket bound (exclusive) of each arm, computed once: assignment is a bisect.
    _bounds: tuple[int, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [a.name for a in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arms: arm names must be unique, repeated: {', '.join(duplicates)}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = " + ".join(f"{a.name} {a.share:g}" for a in self.arms)
            raise ValueError(f"arms: shares must sum to 1, got {shares} = {total:.12g}")
        cumulative, bounds = 0.0, []
        for arm in self.arms:
            cumulative += arm.share
            bounds.append(min(BUCKETS, round(cumulative * BUCKETS)))
        bounds[-1] = BUCKETS  # float rounding must never leave a bucket without an arm
        self._bounds = tuple(bounds)
        return self

    def arm_of_bucket(self, bucket: int) -> Arm:
        for arm, bound in zip(self.arms, self._bounds, strict=True):
            if bucket < bound:
                return arm
        return self.arms[-1]  # unreachable: the last bound is BUCKETS

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)


# A share of 5 %: enough requests for a daily overlap per shadow, little extra CPU.
DEFAULT_SHADOW_SHARE = 0.05


class Shadow(_Strict):
    """A candidate ranked beside serving, off the response path (docs/experiments.md,
    Shadow scoring): for `share` of the requests the service also ranks the request with
    this bundle and/or scorer and logs how far the two lists agree; users never see it."""

    bundle: RunId | None = Field(None, description="a published run id to rank with")
    scorer: ScorerName | None = Field(None, description="a scorer to rank with")
    share: float = Field(DEFAULT_SHADOW_SHARE, ge=0.0, le=1.0,
                         description="share of requests ranked by the shadow too")  # fmt: skip

    @model_validator(mode="after")
    def _check(self) -> Shadow:
        if self.bundle is None and self.scorer is None:
            # An empty shadow would rank exactly what is served: CPU for nothing.
            raise ValueError("bundle/scorer: neither is set; a shadow names at least one")
        return self


class ExperimentsFile(_Strict):
    version: int = Field(0, ge=0, description="set by `recsys experiment set`: +1 per write")
    experiments: list[Experiment] = Field(default_factory=list, max_length=1000)
    shadow: Shadow | None = Field(None, description="a candidate ranked off the response path")

    @model_validator(mode="after")
    def _check(self) -> ExperimentsFile:
        _unique(self.experiments, "name")
        _unique(self.experiments, "salt")  # a shared salt would correlate two experiments
        running: dict[str, Experiment] = {}
        owner: dict[str, Experiment] = {}  # treatment setting -> the running experiment
        for n, e in enumerate(self.experiments):
            if e.status != "running":
                continue
            other = running.setdefault(e.layer, e)
            if other is not e:
                raise ValueError(
                    f"experiments[{n}].status: layer {e.layer!r} already has running "
                    f"experiment {other.name!r}; at most one experiment runs per layer"
                )
            for m, arm in enumerate(e.arms):
                for setting in arm.treatment.settings:
                    first = owner.setdefault(setting, e)
                    if first is not e:
                        raise ValueError(
                            f"experiments[{n}].arms[{m}].treatment.{setting}: also set by "
                            f"running experiment {first.name!r} (layer {first.layer!r}); a "
                            "setting belongs to one layer"
                        )
        return self

    @property
    def running(self) -> list[Experiment]:
        return [e for e in self.experiments if e.status == "running"]

    def experiment(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def arm_bundles(self) -> set[str]:
        """The run ids that arms of running experiments serve, and the shadow's: the service
        holds them all loaded and `recsys batch prune` keeps them."""
        runs = {a.treatment.bundle for e in self.running for a in e.arms if a.treatment.bundle}
        if self.shadow is not None and self.shadow.bundle is not None:
            runs.add(self.shadow.bundle)
        return runs


def _unique(experiments: Sequence[Experiment], key: str) -> None:
    seen: dict[str, int] = {}
    for n, e in enumerate(experiments):
        value = getattr(e, key)
        if value in seen:
            raise ValueError(
                f"experiments[{n}].{key}: {value!r} is already used by experiments[{seen[value]}]"
                f"; each experiment needs its own {key}"
            )
        seen[value] = n


# ---- parsing ---------------------------------------------------------------------------


def _field(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(text: str | bytes, source: str = EXPERIMENTS_FILE) -> ExperimentsFile:
    """The file's content, validated; ExperimentsError names the first bad field."""
    try:
        return ExperimentsFile.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise ExperimentsError(f"{source}: not valid JSON ({err['msg']})") from None
        where = _field(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        # A model validator's message already starts with the path inside the model.
        if err["type"] == "value_error" and where:
            msg = f"{where}.{msg}" if not msg.startswith("experiments[") else msg
        elif where:
            msg = f"{where}: {msg}"
        raise ExperimentsError(f"{source}: {msg}") from None


def read_file(path: Path) -> ExperimentsFile:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ExperimentsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(text, str(path))


def experiments_path(artifacts: Path) -> Path:
    return artifacts / EXPERIMENTS_FILE


def load(artifacts: Path) -> ExperimentsFile | None:
    """ART/experiments.json, validated; None when there is none (no experiment runs)."""
    path = experiments_path(artifacts)
    if not path.exists():
        return None
    return read_file(path)


# ---- assignment ------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    treatment: Treatment


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket in [0, BUCKETS): a pure function of (salt, unit), the same in every
    process and on every machine (no Python hash(), which is salted per process)."""
    digest = hashlib.blake2b(f"{salt}:{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def assign(
    file: ExperimentsFile | None, unit: str | None, forced: Mapping[str, str] | None = None
) -> list[Assignment]:
    """The unit's arm in every running experiment, in file order; `forced` (experiment ->
    arm, QA) overrides the hash for the experiments it names. No unit (an anonymous caller
    without an assignment id): only the forced arms. ExperimentsError for a forced
    experiment that does not run or an arm it does not have."""
    forced = dict(forced or {})
    running = file.running if file is not None else []
    names = {e.name for e in running}
    for name, arm in forced.items():
        if name not in names:
            raise ExperimentsError(f"no running experiment {name!r}")
        found = next(e for e in running if e.name == name)
        if found.arm(arm) is None:
            arms = ", ".join(a.name for a in found.arms)
            raise ExperimentsError(f"experiment {name!r} has no arm {arm!r} (arms: {arms})")
    out: list[Assignment] = []
    for e in running:
        if e.name in forced:
            chosen = e.arm(forced[e.name])
            assert chosen is not None  # checked above
        elif unit:
            chosen = e.arm_of_bucket(bucket(e.salt, unit))
        else:
            continue
        out.append(Assignment(e.name, chosen.name, chosen.treatment))
    return out


def merged_treatment(assignments: Sequence[Assignment]) -> Treatment:
    """One treatment from the user's arms; the settings are disjoint by validation."""
    settings: dict[str, object] = {}
    for a in assignments:
        settings.update(a.treatment.settings)
    return Treatment.model_validate(settings)


# ---- writing, with a version and an audit line ----------------------------------------


def diff_summary(old: ExperimentsFile | None, new: ExperimentsFile) -> list[str]:
    """What changed, one short line per experiment that did."""
    before = {e.name: e for e in (old.experiments if old else [])}
    after = {e.name: e for e in new.experiments}
    lines: list[str] = []
    for name, e in after.items():
        arms = ", ".join(f"{a.name} {a.share:g}" for a in e.arms)
        prev = before.get(name)
        if prev is None:
            lines.append(f"added {name} (layer {e.layer}, {e.status}; arms {arms})")
            continue
        if prev.status != e.status:
            lines.append(f"{name}: {prev.status} -> {e.status}")
        if [(a.name, a.share) for a in prev.arms] != [(a.name, a.share) for a in e.arms]:
            lines.append(f"{name}: arms -> {arms}")
        if [a.treatment for a in prev.arms] != [a.treatment for a in e.arms]:
            lines.append(f"{name}: treatments changed")
        if (prev.layer, prev.salt) != (e.layer, e.salt):
            lines.append(f"{name}: layer/salt changed (users are reassigned)")
    lines.extend(f"removed {name}" for name in before if name not in after)
    old_shadow = old.shadow if old else None
    if old_shadow != new.shadow:
        lines.append(f"shadow: {_shadow_text(old_shadow)} -> {_shadow_text(new.shadow)}")
    return lines or ["no change"]


def _shadow_text(shadow: Shadow | None) -> str:
    if shadow is None:
        return "none"
    return (f"bundle {shadow.bundle or '(served)'}, scorer {shadow.scorer or '(served)'}, "
            f"share {shadow.share:g}")  # fmt: skip


_thread_lock = threading.Lock()  # flock is per open file; threads of one process share one


@contextlib.contextmanager
def _write_lock(artifacts: Path) -> Iterator[None]:
    """Serialise writers (two `set` at once must not both write version N+1)."""
    with _thread_lock, (artifacts / _LOCK_FILE).open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write(artifacts: Path, new: ExperimentsFile, who: str | None = None,
          reason: str | None = None) -> ExperimentsFile:  # fmt: skip
    """Write `new` as ART/experiments.json with version = the current one + 1 (atomically:
    tmp, fsync, rename, so the service never reads half a file), then append an audit line
    {ts, version, who, diff} (+ `reason` when given: why an automated writer, such as the
    rollout guardrail check, changed the file). Returns what was written."""
    artifacts.mkdir(parents=True, exist_ok=True)
    who = who or os.environ.get("USER") or "unknown"
    with _write_lock(artifacts):
        try:
            old = load(artifacts)
        except ExperimentsError:
            old = None  # a broken file on disk is replaced, and the audit says from what
        written = new.model_copy(update={"version": (old.version if old else 0) + 1})
        target = experiments_path(artifacts)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(written.model_dump_json(indent=2) + "\n")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        entry = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "version": written.version,
            "who": who,
            "diff": diff_summary(old, written),
        }
        if reason:
            entry["reason"] = reason
        with (artifacts / AUDIT_FILE).open("a") as fh:  # append-only: never rewritten
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return written


def check_bundles(file: ExperimentsFile, artifacts: Path) -> None:
    """Every arm's bundle is a published run in ART/runs (checked before a write; the
    service verifies it fully when it loads it)."""
    for n, e in enumerate(file.experiments):
        for m, arm in enumerate(e.arms):
            run = arm.treatment.bundle
            if run and not (run_dir(artifacts, run) / MANIFEST).exists():
                raise ExperimentsError(
                    f"experiments[{n}].arms[{m}].treatment.bundle: no published run {run!r} "
                    f"in {artifacts}/runs"
                )
    shadow = file.shadow.bundle if file.shadow is not None else None
    if shadow and not (run_dir(artifacts, shadow) / MANIFEST).exists():
        raise ExperimentsError(f"shadow.bundle: no published run {shadow!r} in {artifacts}/runs")
