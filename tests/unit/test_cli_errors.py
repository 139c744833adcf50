"""Every `recsys` command ends a RecsysError with `error: <message>` on stderr and the
error's exit code (shared/errors.py): schedulers branch on the code, people read the line.

The quality gate on a tiny artifacts dir whose evaluation is worse than popularity: `recsys
batch stage gate` and `recsys batch run` both exit 3 and leave CURRENT alone. No Spark: the
gate is a driver stage, and `run` gets fakes for every other stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from batch import stages
from batch.pipeline.cli import batch_app
from shared.cli_errors import RecsysGroup
from shared.errors import (
    EXIT_CODES,
    BundleError,
    DataContractError,
    InputDriftFailed,
    QualityGateFailed,
    QuarantineThresholdExceeded,
    RecsysError,
    RolloutCheckFailed,
    StageFailed,
    UsageError,
    WarehouseUnavailable,
)
from shared.warehouse_cli import register as register_warehouse

RUN_DATE = "2026-01-01"
REPO = Path(__file__).resolve().parents[2]


def _errors() -> list[RecsysError]:
    return [RecsysError("x"), UsageError("x"), QualityGateFailed("x"), DataContractError("x"),
            QuarantineThresholdExceeded("x"), BundleError("x"), StageFailed("s", 1, ["x"]),
            WarehouseUnavailable("x"), InputDriftFailed("x"), RolloutCheckFailed("x")]  # fmt: skip


def test_the_table_has_every_error_with_a_distinct_code() -> None:
    assert sorted(EXIT_CODES) == sorted(type(e).__name__ for e in _errors())
    codes = [e.exit_code for e in _errors()]
    assert len(set(codes)) == len(codes) and 0 not in codes
    table = (REPO / "docs" / "stages.md").read_text()
    for name, code in EXIT_CODES.items():
        assert f"| {code} | `{name}` |" in table, name


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_a_recsys_error_ends_a_command_with_its_exit_code(error: RecsysError) -> None:
    app = typer.Typer(cls=RecsysGroup)

    @app.command("boom")
    def boom() -> None:
        raise error

    @app.command("fine")
    def fine() -> None:
        typer.echo("ok")

    result = CliRunner().invoke(app, ["boom"])
    assert result.exit_code == error.exit_code
    assert result.stderr.splitlines() == [f"error: {error}"]
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


def test_a_bug_keeps_its_traceback() -> None:
    app = typer.Typer(cls=RecsysGroup)

    @app.command("boom")
    def boom() -> None:
        raise KeyError("bug")

    @app.command("fine")
    def fine() -> None:
        pass

    result = CliRunner().invoke(app, ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)


# --------------------------------------------------------------------------------------
# The quality gate: `batch stage gate` and `batch run`
# --------------------------------------------------------------------------------------


@pytest.fixture
def refused_run(tmp_path: Path) -> Path:
    """ART whose evaluated run is worse than the popularity baseline (the gate's input)."""
    art = tmp_path / "art"
    metrics = stages.RunOutputs(art / "work" / RUN_DATE).evaluate.metrics
    metrics.parent.mkdir(parents=True)
    lists = {"merged": {"ndcg@10": 0.05}, "popularity": {"ndcg@10": 0.10}}
    metrics.write_text(json.dumps({"lists": lists}))
    return art


def _args(art: Path, *command: str) -> list[str]:
    return [*command, "--data", str(art.parent / "data"), "--artifacts", str(art),
            "--run-date", RUN_DATE]  # fmt: skip


def test_stage_gate_on_a_failing_run_exits_3(refused_run: Path) -> None:
    result = CliRunner().invoke(batch_app, _args(refused_run, "stage", "gate"))
    assert result.exit_code == QualityGateFailed.exit_code == 3
    assert "error: quality gate refused to publish: ndcg@10 0.0500 is not above the " \
           "popularity baseline 0.1000" in result.stderr
    decision = json.loads(stages.RunOutputs(refused_run / "work" / RUN_DATE).gate.decision
                          .read_text())
    assert decision["passed"] is False and decision["reasons"]
    assert not (refused_run / "CURRENT").exists()


def test_run_on_a_failing_run_exits_3_and_does_not_publish(
    refused_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch.pipeline.runner import PipelineRunner

    ran: list[str] = []
    real_entry = stages.StageSpec.entry

    def entry(spec: stages.StageSpec):  # type: ignore[no-untyped-def]
        if spec.name == "gate":
            return real_entry(spec)
        return lambda ctx, spark=None: ran.append(spec.name) or {}

    monkeypatch.setattr(stages.StageSpec, "entry", entry)
    monkeypatch.setattr(PipelineRunner, "_session", lambda self: object())
    result = CliRunner().invoke(batch_app, _args(refused_run, "run"))
    assert result.exit_code == 3, result.output
    assert "error: quality gate refused to publish" in result.stderr
    gate = stages.STAGE_NAMES.index("gate")
    assert ran == list(stages.STAGE_NAMES[:gate])  # publish never ran
    assert not (refused_run / "CURRENT").exists()


def test_the_recsys_command_exits_3_too(refused_run: Path) -> None:
    """The real entry point (what the DAG's gate task runs and branches on)."""
    done = subprocess.run([sys.executable, "-m", "shared.cli", *_args(refused_run, "batch", "stage", "gate")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: quality gate refused to publish")


def test_an_unknown_stage_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(batch_app, _args(tmp_path, "stage", "nope"))
    assert result.exit_code == UsageError.exit_code == 2
    assert result.stderr.startswith("error: unknown stage 'nope'; stages are validate")


def test_rollback_with_nothing_to_roll_back_is_a_bundle_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(batch_app, ["rollback", "--artifacts", str(tmp_path)])
    assert result.exit_code == BundleError.exit_code
    assert result.stderr.startswith("error: nothing to roll back to")


# --------------------------------------------------------------------------------------
# The warehouse commands (shared/: also in the serve-only install) and the report
# --------------------------------------------------------------------------------------


@pytest.fixture
def root_app() -> typer.Typer:
    app = typer.Typer(cls=RecsysGroup)

    @app.callback()
    def _root() -> None:
        """root"""

    register_warehouse(app)
    return app


def test_warehouse_commands_without_a_warehouse_exit_8(root_app: typer.Typer, tmp_path: Path) -> None:
    for args in (["sql", "--artifacts", str(tmp_path), "SELECT 1"],
                 ["warehouse", "vacuum", "--artifacts", str(tmp_path)]):
        result = CliRunner().invoke(root_app, args)
        assert result.exit_code == WarehouseUnavailable.exit_code == 8, args
        assert result.stderr.startswith(f"error: no warehouse at {tmp_path}"), args


def test_sql_usage_errors_exit_2(root_app: typer.Typer, tmp_path: Path) -> None:
    for args in (["sql", "SELECT 1"], ["sql", "--artifacts", str(tmp_path)],
                 ["sql", "--artifacts", str(tmp_path), "--query", "no_such_query"],
                 ["sql", "--artifacts", str(tmp_path), "--param", "a=1", "SELECT 1"]):
        result = CliRunner().invoke(root_app, args)
        assert result.exit_code == 2 and result.stderr.startswith("error: "), args


def test_vacuum_vacuums_every_warehouse_file(root_app: typer.Typer, tmp_path: Path) -> None:
    import duckdb

    for name in ("warehouse.duckdb", "warehouse_analyst.duckdb"):
        with duckdb.connect(str(tmp_path / name)) as con:
            con.execute("CREATE TABLE t AS SELECT range AS x FROM range(10000)")
            con.execute("DELETE FROM t WHERE x % 2 = 0")
    result = CliRunner().invoke(root_app, ["warehouse", "vacuum", "--artifacts", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        f"vacuumed {tmp_path / 'warehouse.duckdb'}",
        f"vacuumed {tmp_path / 'warehouse_analyst.duckdb'}",
    ]


def test_report_without_a_warehouse_exits_8(tmp_path: Path) -> None:
    from batch.report.cli import report

    app = typer.Typer()
    app.command()(report)
    result = CliRunner().invoke(app, ["--artifacts", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 8 and result.stderr.startswith("error: no warehouse at")
