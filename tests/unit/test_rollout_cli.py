"""`recsys rollout` (the real CLI, `python -m shared.cli`): its errors and what start, abort
and the nightly canary mode write (shared/rollout.py, batch/stages/publish.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from batch.context import RunContext
from batch.stages.publish import switch_or_canary
from shared import experiments as exp
from shared import rollout
from shared.bundle import read_current
from shared.config import PipelineConfig
from shared.errors import ExperimentsError, UsageError
from tests.online.bundle_factory import build_bundle, corrupt


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", "rollout", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def art(tmp_path: Path) -> Path:
    art = tmp_path / "art"
    build_bundle(art, "run-a")
    build_bundle(art, "run-b", seed=1, publish=False)
    return art


def test_start_refuses_what_is_not_a_verified_published_run(art: Path) -> None:
    done = cli("start", "run-x", "--artifacts", str(art))
    assert done.returncode == 6
    assert done.stderr.strip() == f"error: bundle run-x: run directory {art}/runs/run-x does not exist"
    build_bundle(art, "run-c", publish=False)
    corrupt(art / "runs" / "run-c")
    done = cli("start", "run-c", "--artifacts", str(art))
    assert done.returncode == 6 and "checksum mismatch for item_factors.npy" in done.stderr
    done = cli("start", "run-a", "--artifacts", str(art))
    assert done.returncode == 2 and "run 'run-a' is CURRENT already" in done.stderr
    done = cli("start", "run-b", "--share", "5", "--artifacts", str(art))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --share '5': the canary share must be above 0 and below 100%"
    assert not exp.experiments_path(art).exists()  # nothing was written


def test_one_rollout_at_a_time_and_no_promote_or_abort_without_one(art: Path) -> None:
    done = cli("promote", "--artifacts", str(art))
    assert done.returncode == 2 and "error: no rollout is running in" in done.stderr
    done = cli("abort", "--artifacts", str(art), "--reason", "x")
    assert done.returncode == 2 and "error: no rollout is running in" in done.stderr
    assert cli("status", "--artifacts", str(art)).stdout.strip() == "no rollout running (CURRENT run-a)"

    done = cli("start", "run-b", "--share", "5%", "--artifacts", str(art))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "started canary-run-b: run-b serves 5.00% of users, CURRENT run-a the rest"
    build_bundle(art, "run-c", publish=False)
    done = cli("start", "run-c", "--artifacts", str(art))
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: rollout canary-run-b (run run-b) is already running: "
                                   "promote or abort it first (one rollout at a time)")  # fmt: skip
    assert "canary-run-b: canary run-b at 5.00% vs CURRENT run-a" in cli("status", "--artifacts", str(art)).stdout

    file = exp.load(art)
    assert file is not None
    e = file.experiment("canary-run-b")
    assert e is not None and (e.layer, e.status) == ("rollout", "running")
    assert [(a.name, a.share, a.treatment.bundle) for a in e.arms] == [
        ("control", 0.95, None), ("canary", 0.05, "run-b")]

    done = cli("abort", "--artifacts", str(art), "--reason", "pager went off")
    assert done.returncode == 0, done.stderr
    assert rollout.current(art) is None and read_current(art) == "run-a"
    audit = json.loads((art / exp.AUDIT_FILE).read_text().splitlines()[-1])
    assert audit["reason"] == "rollout aborted: pager went off"
    assert [(e["action"], e["reason"]) for e in rollout.read_events(art)][-1] == ("aborted", "pager went off")


def test_a_restarted_rollout_of_the_same_run_gets_its_own_name_and_salt(art: Path) -> None:
    first = rollout.start(art, "run-b", 0.1)
    with rollout.lock(art):
        rollout.stop(art, first, "aborted", "try again")
    second = rollout.start(art, "run-b", 0.2)
    assert (first.experiment, second.experiment) == ("canary-run-b", "canary-run-b-2")
    file = exp.load(art)
    assert file is not None
    assert [(e.name, e.salt, e.status) for e in file.experiments] == [
        ("canary-run-b", "rollout:canary-run-b", "stopped"),
        ("canary-run-b-2", "rollout:canary-run-b-2", "running")]


def test_a_running_bundle_experiment_elsewhere_blocks_the_rollout(art: Path) -> None:
    exp.write(art, exp.ExperimentsFile.model_validate({"experiments": [{
        "name": "bundles", "layer": "ranking", "salt": "s1", "status": "running",
        "arms": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5,
                                                "treatment": {"bundle": "run-b"}}]}]}))  # fmt: skip
    build_bundle(art, "run-c", publish=False)
    with pytest.raises(ExperimentsError, match=r"treatment.bundle: also set by running experiment 'bundles'"):
        rollout.start(art, "run-c", 0.05)


@pytest.mark.parametrize(("text", "share"), [("5%", 0.05), ("0.05", 0.05), ("50%", 0.5), (" 12.5% ", 0.125)])
def test_share_parsing(text: str, share: float) -> None:
    assert rollout.parse_share(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["5", "0", "100%", "-1%", "half"])
def test_bad_shares_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        rollout.parse_share(text)


def _ctx(art: Path, **publish: object) -> RunContext:
    config = PipelineConfig.model_validate({"publish": publish})
    return RunContext(art.parent / "data", art, dt.date(2026, 1, 2), config)


def test_nightly_canary_mode_starts_a_rollout_instead_of_switching(tmp_path: Path) -> None:
    art = tmp_path / "art"
    build_bundle(art, "run-1", publish=False)
    canary = _ctx(art, mode="canary", canary_share=0.1)
    assert switch_or_canary(canary, "run-1") == "run-1"  # the first run ever: no CURRENT
    assert read_current(art) == "run-1" and not exp.experiments_path(art).exists()

    build_bundle(art, "run-2", publish=False)
    assert switch_or_canary(canary, "run-2") == "run-1"
    assert read_current(art) == "run-1"
    assert rollout.current(art) == rollout.Rollout("canary-run-2", "run-2", 0.1)

    build_bundle(art, "run-3", publish=False)  # the next night supersedes the canary
    assert switch_or_canary(canary, "run-3") == "run-1"
    assert rollout.current(art) == rollout.Rollout("canary-run-3", "run-3", 0.1)
    events = [(e["experiment"], e["action"], e["reason"]) for e in rollout.read_events(art)]
    assert events[1] == ("canary-run-2", "aborted", "superseded by the canary of run run-3")

    build_bundle(art, "run-4", publish=False)  # default switch mode: today's behaviour
    assert switch_or_canary(_ctx(art), "run-4") == "run-4"
    assert read_current(art) == "run-4"


def test_the_history_is_strict_json_and_survives_a_torn_line(tmp_path: Path) -> None:
    from batch.publish.warehouse_build import rollout_events_table

    art = tmp_path / "art"
    found = rollout.Rollout("canary-run-b", "run-b", 0.05)
    rollout.record(art, found, "check_passed", "waiting", {"error_rate": {"canary": float("nan")}})
    with rollout.events_path(art).open("a") as fh:
        fh.write('{"ts": "2026-12-03T10:00:00+00:00", "run_id": "run-b", "act')  # a crash mid-append
    assert json.loads(rollout.events_path(art).read_text().splitlines()[0])["values"] == {
        "error_rate": {"canary": None}}
    [event] = rollout.read_events(art)
    assert (event["action"], event["reason"]) == ("check_passed", "waiting")
    table = rollout_events_table(art).to_pylist()
    assert [(r["action"], r["run_id"], json.loads(r["values"])) for r in table] == [
        ("check_passed", "run-b", {"error_rate": {"canary": None}})]
    assert table[0]["ts"].tzinfo is None  # naive UTC, like every warehouse timestamp
