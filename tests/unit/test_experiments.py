"""The experiments file: validation messages, sticky and independent assignment, audited
writes, and the `recsys experiment` commands."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from shared import experiments as exp
from shared.errors import ExperimentsError, UsageError

REPO = Path(__file__).resolve().parents[2]


def experiment(name: str = "ranker", layer: str = "ranking", salt: str | None = None,
               status: str = "running", arms: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name, "layer": layer, "salt": salt or f"{name}-salt", "status": status,
        "arms": arms if arms is not None else [
            {"name": "control", "share": 0.5},
            {"name": "treated", "share": 0.5, "treatment": {"scorer": "none"}},
        ],
    }  # fmt: skip


def parse(*experiments: dict[str, Any], version: int = 1) -> exp.ExperimentsFile:
    return exp.parse(json.dumps({"version": version, "experiments": list(experiments)}))


def refused(*experiments: dict[str, Any]) -> str:
    with pytest.raises(ExperimentsError) as info:
        parse(*experiments)
    return str(info.value)


# ---- validation -------------------------------------------------------------------------


def test_a_valid_file_parses_and_an_empty_treatment_is_control() -> None:
    file = parse(experiment())
    assert [e.name for e in file.running] == ["ranker"]
    assert file.experiments[0].arms[0].treatment.settings == {}
    assert file.experiments[0].arms[1].treatment.settings == {"scorer": "none"}


def test_shares_must_sum_to_one_and_the_message_names_the_arms() -> None:
    msg = refused(experiment(arms=[{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]))
    assert "experiments[0].arms: shares must sum to 1" in msg
    assert "a 0.5 + b 0.4 = 0.9" in msg


def test_shares_within_rounding_noise_of_one_are_accepted() -> None:
    thirds = [{"name": n, "share": 1 / 3} for n in ("a", "b", "c")]
    assert len(parse(experiment(arms=thirds)).experiments[0].arms) == 3


def test_arm_names_are_unique() -> None:
    msg = refused(experiment(arms=[{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]))
    assert "experiments[0].arms: arm names must be unique, repeated: a" in msg


def test_experiment_names_and_salts_are_unique() -> None:
    msg = refused(experiment("x", "l1", "s1"), experiment("x", "l2", "s2"))
    assert "experiments[1].name: 'x' is already used by experiments[0]" in msg
    msg = refused(experiment("x", "l1", "s1"), experiment("y", "l2", "s1"))
    assert "experiments[1].salt: 's1' is already used" in msg


def test_one_running_experiment_per_layer_but_a_stopped_one_may_stay() -> None:
    msg = refused(experiment("x", "ranking"), experiment("y", "ranking"))
    assert "experiments[1].status: layer 'ranking' already has running experiment 'x'" in msg
    file = parse(experiment("x", "ranking"), experiment("y", "ranking", status="stopped"))
    assert [e.name for e in file.running] == ["x"]


def test_a_setting_belongs_to_one_layer() -> None:
    msg = refused(experiment("x", "ranking"), experiment("y", "retrieval"))  # both set scorer
    assert "experiments[1].arms[1].treatment.scorer: also set by running experiment 'x'" in msg


@pytest.mark.parametrize(
    ("arm", "field", "words"),
    [
        ({"name": "a", "share": 1, "treatment": {"scorer": "onnx"}},
         "experiments[0].arms[0].treatment.scorer", "'onnx-int8', 'onnx-fp32', 'als-dot'"),
        ({"name": "a", "share": 1.5}, "experiments[0].arms[0].share", "less than or equal to 1"),
        ({"name": "a", "share": 1, "treatment": {"ann_k": 0}},
         "experiments[0].arms[0].treatment.ann_k", "greater than or equal to 1"),
        ({"name": "a", "share": 1, "treatment": {"diversty": False}},
         "experiments[0].arms[0].treatment.diversty", "Extra inputs are not permitted"),
        ({"name": "a=b", "share": 1}, "experiments[0].arms[0].name", "pattern"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named(arm: dict[str, Any], field: str, words: str) -> None:
    msg = refused(experiment(arms=[arm]))
    assert f"{field}: " in msg and words in msg


def test_not_json_is_a_clear_error_and_a_usage_error() -> None:
    with pytest.raises(ExperimentsError, match="not valid JSON") as info:
        exp.parse("{", "my.json")
    assert isinstance(info.value, UsageError) and str(info.value).startswith("my.json: ")


# ---- assignment -------------------------------------------------------------------------


def test_assignment_is_sticky_and_by_cumulative_share() -> None:
    file = parse(experiment(arms=[{"name": "a", "share": 0.25}, {"name": "b", "share": 0.75}]))
    first = exp.assign(file, "user-1")
    assert first == exp.assign(file, "user-1")
    e = file.experiments[0]
    for unit in (f"u{n}" for n in range(200)):
        expected = "a" if exp.bucket(e.salt, unit) < 2500 else "b"
        assert exp.assign(file, unit)[0].arm == expected


def test_the_same_arm_in_another_process() -> None:
    """No per-process hash seed: a fresh interpreter (another worker) places users alike."""
    file = parse(experiment(arms=[{"name": n, "share": 0.25} for n in "abcd"]))
    units = [f"user-{n}" for n in range(300)]
    here = [exp.assign(file, u)[0].arm for u in units]
    code = (
        "import json, sys\n"
        "from shared import experiments as exp\n"
        "file = exp.parse(sys.stdin.read())\n"
        f"print(json.dumps([exp.assign(file, u)[0].arm for u in {units!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=file.model_dump_json(),
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PYTHONHASHSEED": "123", "PATH": ""})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == here


def test_shares_hold_over_100k_ids_within_binomial_noise() -> None:
    shares = {"a": 0.1, "b": 0.3, "c": 0.6}
    file = parse(experiment(arms=[{"name": k, "share": v} for k, v in shares.items()]))
    n = 100_000
    counts = Counter(exp.assign(file, f"id-{i}")[0].arm for i in range(n))
    for arm, share in shares.items():
        sd = math.sqrt(n * share * (1 - share))
        assert abs(counts[arm] - n * share) < 4 * sd, (arm, counts[arm])


def test_layers_are_independent() -> None:
    """The cross-tab of two layers' arms shows no association (chi-square)."""
    file = parse(
        experiment("x", "ranking", "salt-x",
                   arms=[{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]),
        experiment("y", "retrieval", "salt-y",
                   arms=[{"name": "c", "share": 0.2}, {"name": "d", "share": 0.3},
                         {"name": "e", "share": 0.5, "treatment": {"ann_k": 50}}]),
    )  # fmt: skip
    table = np.zeros((2, 3))
    rows, cols = {"a": 0, "b": 1}, {"c": 0, "d": 1, "e": 2}
    for i in range(50_000):
        x, y = exp.assign(file, f"user-{i}")
        table[rows[x.arm], cols[y.arm]] += 1
    result = stats.chi2_contingency(table)
    assert result.pvalue > 0.001, table


def test_a_stopped_experiment_assigns_nobody_and_no_unit_gets_only_forced_arms() -> None:
    file = parse(experiment("x", "l1"), experiment("y", "l2", status="stopped",
                                                   arms=[{"name": "a", "share": 1}]))  # fmt: skip
    assert [a.experiment for a in exp.assign(file, "u1")] == ["x"]
    assert exp.assign(file, None) == []
    assert exp.assign(None, "u1") == []
    forced = exp.assign(file, None, {"x": "treated"})
    assert [(a.experiment, a.arm) for a in forced] == [("x", "treated")]
    assert forced[0].treatment.scorer == "none"


def test_a_forced_arm_must_exist() -> None:
    file = parse(experiment("x"), experiment("y", "l2", status="stopped"))
    with pytest.raises(ExperimentsError, match="no running experiment 'y'"):
        exp.assign(file, "u1", {"y": "control"})
    with pytest.raises(ExperimentsError, match=r"has no arm 'zzz' \(arms: control, treated\)"):
        exp.assign(file, "u1", {"x": "zzz"})


def test_treatments_of_two_layers_merge() -> None:
    file = parse(
        experiment("x", "ranking", arms=[{"name": "a", "share": 1,
                                          "treatment": {"scorer": "als-dot"}}]),
        experiment("y", "rules", arms=[{"name": "b", "share": 1,
                                        "treatment": {"diversity": False}}]),
    )  # fmt: skip
    merged = exp.merged_treatment(exp.assign(file, "u1"))
    assert merged.settings == {"scorer": "als-dot", "diversity": False}


# ---- writing ----------------------------------------------------------------------------


def test_write_bumps_the_version_and_audits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:  # fmt: skip
    monkeypatch.setenv("USER", "alice")
    first = exp.write(tmp_path, parse(experiment(), version=7))
    assert first.version == 1  # the store counts versions, whatever the file said
    stopped = experiment(status="stopped")
    second = exp.write(tmp_path, parse(stopped))
    assert second.version == 2 and exp.load(tmp_path) == second
    lines = [json.loads(line) for line in (tmp_path / exp.AUDIT_FILE).read_text().splitlines()]
    assert [(e["version"], e["who"]) for e in lines] == [(1, "alice"), (2, "alice")]
    assert lines[0]["diff"] == ["added ranker (layer ranking, running; arms control 0.5, "
                                "treated 0.5)"]  # fmt: skip
    assert lines[1]["diff"] == ["ranker: running -> stopped"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_check_bundles_names_a_missing_run(tmp_path: Path) -> None:
    file = parse(experiment(arms=[{"name": "a", "share": 1, "treatment": {"bundle": "run-z"}}]))
    with pytest.raises(ExperimentsError, match=r"experiments\[0\]\.arms\[0\]\.treatment\.bundle: "
                                               "no published run 'run-z'"):  # fmt: skip
        exp.check_bundles(file, tmp_path)


# ---- the CLI ----------------------------------------------------------------------------


def recsys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", "experiment", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip


def test_cli_validate_set_show_assign(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": 0, "experiments": [experiment()]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 0, "experiments": [
        experiment(arms=[{"name": "a", "share": 0.7}])]}))  # fmt: skip
    art = tmp_path / "art"

    done = recsys("validate", str(bad))
    assert done.returncode == 2
    assert "error: " in done.stderr and "experiments[0].arms: shares must sum to 1" in done.stderr
    assert recsys("show", "--artifacts", str(art)).returncode == 2  # nothing installed yet

    assert recsys("validate", str(good)).returncode == 0
    done = recsys("set", str(good), "--artifacts", str(art))
    assert done.returncode == 0 and "version 1" in done.stdout, done.stderr
    shown = recsys("show", "--artifacts", str(art))
    assert "ranker (layer ranking, running" in shown.stdout and "treated" in shown.stdout
    done = recsys("assign", "u7", "--artifacts", str(art), "--json")
    arm = exp.assign(exp.load(art), "u7")[0].arm
    assert json.loads(done.stdout)[0] == {"experiment": "ranker", "arm": arm,
                                          "treatment": {} if arm == "control"
                                          else {"scorer": "none"}}  # fmt: skip


def test_the_batch_install_adds_the_report_to_the_group() -> None:
    """`report` comes from batch's entry point (scipy, statsmodels) into shared's group."""
    done = subprocess.run([sys.executable, "-m", "shared.cli", "experiment", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for command in ("validate", "set", "show", "assign", "report"):
        assert f" {command} " in done.stdout, command
