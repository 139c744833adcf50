"""The stage registry (batch/stages/__init__.py) is the one list of stages, and it is true.

* every stage has its module with `run`, taking a SparkSession exactly when it needs one;
* a stage needs only stages listed before it, and reads exactly the outputs of the stages it
  needs: the stage code (its `run` and every batch function it calls) is read with `ast`,
  each `ctx.outputs.<stage>.<output>` (and legacy `ctx.path("stage", ...)`) collected, and
  each output checked to exist in that stage's outputs class;
* in a run, a stage's context refuses any other stage's outputs;
* the runner runs the registry's order with its `[i/N] stage: done` lines, the CLI help
  lists it, and the docs that list stages list the same (the DAG's tasks: test_dagbag.py).

No Spark: stage functions are replaced by fakes where they would run.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batch import stages
from batch.context import RunContext
from batch.stages.outputs import MODEL_VARIANTS, EmbeddingsOutputs
from shared.config import PipelineConfig
from shared.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# What each stage's code reads: a small call graph over batch/, built with ast
# --------------------------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class _Module:
    """One batch module: its top-level functions and what its imported names refer to."""

    def __init__(self, name: str) -> None:
        file = _module_file(name)
        assert file is not None, name
        self.name, self.tree = name, ast.parse(file.read_text())
        self.functions = {n.name: n for n in self.tree.body
                          if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        self.modules: dict[str, str] = {}  # local name -> batch module
        self.imported: dict[str, tuple[str, str]] = {}  # local name -> (module, function)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batch"):
                for alias in node.names:
                    local, full = alias.asname or alias.name, f"{node.module}.{alias.name}"
                    if _module_file(full) is not None:
                        self.modules[local] = full
                    else:
                        self.imported[local] = (str(node.module), alias.name)


_MODULES: dict[str, _Module] = {}


def _module(name: str) -> _Module:
    if name not in _MODULES:
        _MODULES[name] = _Module(name)
    return _MODULES[name]


def _stage_of(node: ast.expr) -> str | None:
    """`<anything>.outputs.<stage>` -> stage."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "outputs"):
        return node.attr
    return None


def _reads(module: str, function: str, seen: set[tuple[str, str]],
           used: dict[str, set[str]]) -> set[str]:
    """Stages whose outputs `module.function` (and what it calls in batch/) reads; the
    outputs used of each go into `used`."""
    if (module, function) in seen:
        return set()
    seen.add((module, function))
    mod = _module(module)
    fn = mod.functions.get(function)
    if fn is None:
        return set()
    found: set[str] = set()
    aliases: dict[str, str] = {}  # emb = ctx.outputs.embeddings
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values, strict=False):
                stage = _stage_of(value)
                if stage and isinstance(target, ast.Name):
                    aliases[target.id] = stage
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute):
            stage = _stage_of(node)
            if stage:
                found.add(stage)
            inner = _stage_of(node.value) if isinstance(node.value, ast.Attribute) else None
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                inner = aliases[node.value.id]
            if inner:
                used.setdefault(inner, set()).add(node.attr)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in ("path", "stage_dir")
                and isinstance(func.value, ast.Name) and func.value.id == "ctx"
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))  # the legacy string pairs (bundle_writer)
        if isinstance(func, ast.Name):
            if func.id in mod.functions:
                found |= _reads(module, func.id, seen, used)
            elif func.id in mod.imported:
                found |= _reads(*mod.imported[func.id], seen, used)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in mod.modules:
                found |= _reads(mod.modules[func.value.id], func.attr, seen, used)
    return found


def stage_reads(name: str) -> tuple[set[str], dict[str, set[str]]]:
    """(stages read, {stage: outputs used}) of a stage's code, its own outputs included."""
    used: dict[str, set[str]] = {}
    return _reads(f"batch.stages.{name}", "run", set(), used), used


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------


def test_names_are_unique_and_each_stage_has_a_module_with_run() -> None:
    assert len(set(stages.STAGE_NAMES)) == len(stages.STAGES) > 0
    for spec in stages.STAGES:
        assert _module_file(f"batch.stages.{spec.name}") is not None, spec.name
        run = _module(f"batch.stages.{spec.name}").functions.get("run")
        assert run is not None, f"batch/stages/{spec.name}.py has no run()"
        params = [a.arg for a in run.args.args]
        assert params == (["ctx", "spark"] if spec.needs_session else ["ctx"]), spec.name
        assert spec.spark in ("session", "submit", "driver"), spec.name
        assert spec.doc and spec.timeout.total_seconds() > 0, spec.name


def test_entry_returns_the_modules_run() -> None:
    """entry() imports the module: only the driver stages without heavy imports here."""
    fn = stages.get("gate").entry()
    assert fn.__module__ == "batch.stages.gate" and fn.__name__ == "run"
    assert list(inspect.signature(fn).parameters) == ["ctx"]


def test_a_stage_needs_only_stages_listed_before_it() -> None:
    for i, spec in enumerate(stages.STAGES):
        earlier = stages.STAGE_NAMES[:i]
        assert set(spec.needs) <= set(earlier), f"{spec.name} needs {spec.needs}"
        assert len(set(spec.needs)) == len(spec.needs), spec.name


@pytest.mark.parametrize("name", stages.STAGE_NAMES)
def test_a_stage_reads_exactly_the_outputs_of_the_stages_it_needs(name: str) -> None:
    reads, _ = stage_reads(name)
    others = reads - {name}
    assert others <= set(stages.STAGE_NAMES), f"unknown stages read: {others - set(stages.STAGE_NAMES)}"
    assert others == set(stages.get(name).needs), (
        f"{name} reads {sorted(others)} but its StageSpec needs {sorted(stages.get(name).needs)}"
    )


@pytest.mark.parametrize("name", stages.STAGE_NAMES)
def test_every_output_a_stage_uses_is_declared(name: str) -> None:
    _, used = stage_reads(name)
    for stage, names in used.items():
        declared = {*stages.get(stage).outputs.accessors(), "root"}
        assert names <= declared, f"{name} uses {sorted(names - declared)} of {stage}"


def test_each_stage_writes_its_own_outputs() -> None:
    """Every stage but publish (whose outputs are the bundle and CURRENT) uses its own."""
    for spec in stages.STAGES:
        reads, used = stage_reads(spec.name)
        if spec.outputs.accessors():
            assert spec.name in reads and used.get(spec.name), spec.name


def test_outputs_live_under_the_stage_directory() -> None:
    work = Path("/art/work/2026-01-01")
    outputs = stages.RunOutputs(work)
    for spec in stages.STAGES:
        out = getattr(outputs, spec.name)
        assert isinstance(out, spec.outputs) and out.root == work / spec.name
        for accessor in spec.outputs.accessors():
            value = getattr(out, accessor)
            paths = [value(v) for v in MODEL_VARIANTS if _accepts(value, v)] if callable(value) \
                else [value]
            assert paths, f"{spec.name}.{accessor}"
            for path in paths:
                assert path.is_relative_to(out.root), f"{spec.name}.{accessor}: {path}"


def _accepts(fn: object, variant: str) -> bool:
    try:
        fn(variant)  # type: ignore[operator]
    except ValueError:
        return False
    return True


def test_the_variant_to_training_data_map() -> None:
    emb = EmbeddingsOutputs(Path("/w/embeddings"))
    assert emb.train_for("ranker") == emb.ranker_train
    assert emb.train_for("eval") == emb.train
    assert emb.train_for("full") == emb.interactions
    with pytest.raises(ValueError, match="unknown variant"):
        emb.train_for("nope")


def test_the_variant_map_is_written_once() -> None:
    """The three copies it used to have (features, _spark, embeddings) are gone."""
    for rel in ("batch/stages/features.py", "batch/stages/_spark.py", "batch/stages/embeddings.py"):
        text = (REPO / rel).read_text()
        assert '"ranker_train.parquet"' not in text and '"interactions.parquet"' not in text, rel


# --------------------------------------------------------------------------------------
# The run context: a stage reads only what it needs
# --------------------------------------------------------------------------------------


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(tmp_path / "data", tmp_path / "art", dt.date(2026, 1, 1), PipelineConfig())


def test_a_stage_context_refuses_outputs_it_does_not_need(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path).for_stage("index")
    assert ctx.outputs.embeddings.item_factors("eval") == (
        tmp_path / "art/work/2026-01-01/embeddings/eval/item_factors.parquet")
    assert ctx.outputs.index.index("full").name == "index-full.faiss"
    for read in (lambda: ctx.outputs.rank, lambda: ctx.stage_dir("candidates"),
                 lambda: ctx.path("features", "report.json")):
        with pytest.raises(stages.UndeclaredStageInput, match="stage index reads the outputs of"):
            read()
    unchecked = _ctx(tmp_path)  # tests and tools: every stage's outputs
    assert unchecked.outputs.rank.recommendations("full").name == "recommendations.parquet"
    with pytest.raises(AttributeError, match="no stage 'nope'"):
        _ = unchecked.outputs.nope
    with pytest.raises(UsageError, match="unknown stage 'nope'"):
        unchecked.for_stage("nope")


def test_legacy_string_pairs_still_resolve(tmp_path: Path) -> None:
    """bundle_writer.py still uses them; they point at the same files as the accessors."""
    ctx = _ctx(tmp_path).for_stage("publish")
    assert Path(ctx.path("rank", "full/recommendations.parquet")) == (
        ctx.outputs.rank.recommendations("full"))
    assert ctx.stage_dir("evaluate") / "metrics.json" == ctx.outputs.evaluate.metrics


# --------------------------------------------------------------------------------------
# The runner, the CLI and the docs follow the registry
# --------------------------------------------------------------------------------------


def runner_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stages `recsys batch run` runs, in order, with fakes for every stage."""
    from batch.pipeline.runner import PipelineRunner

    ran: list[str] = []

    def fake_entry(spec: stages.StageSpec):  # type: ignore[no-untyped-def]
        def run(ctx: RunContext, spark: object = None) -> dict[str, object]:
            assert ctx.stage == spec.name and (spark is not None) == spec.needs_session
            ran.append(spec.name)
            return {}

        return run

    monkeypatch.setattr(stages.StageSpec, "entry", fake_entry)
    monkeypatch.setattr(PipelineRunner, "_session", lambda self: object())
    PipelineRunner(_ctx(tmp_path)).run_all()
    return ran


def test_the_runner_runs_the_registry_in_order_with_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="recsys.progress"):
        assert runner_order(tmp_path, monkeypatch) == list(stages.STAGE_NAMES)
    n = len(stages.STAGES)
    done = [m for m in caplog.messages if re.match(r"\[\d+/\d+\] \w+: done in", m)]
    assert [m.split(":")[0] for m in done] == [
        f"[{i}/{n}] {name}" for i, name in enumerate(stages.STAGE_NAMES, start=1)
    ]


def cli_stage_help() -> str:
    from batch.pipeline.cli import batch_app

    result = CliRunner().invoke(batch_app, ["stage", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def cli_help_stages(text: str) -> list[str]:
    """The stages `recsys batch stage --help` lists, in its order."""
    return re.findall(r"^\s*\d+\. (\w+) \((?:session|submit|driver)\)", text, flags=re.M)


def test_the_cli_help_lists_the_registry() -> None:
    text = cli_stage_help()
    assert cli_help_stages(text) == list(stages.STAGE_NAMES)
    for spec in stages.STAGES:
        assert f"{spec.name} ({spec.spark})" in text and spec.doc in text, spec.name


def _named_stages(text: str) -> list[str]:
    """The stage names in text, in the order they appear (other words ignored)."""
    return [w for w in re.findall(r"\w+", text) if w in stages.STAGE_NAMES]


def test_the_docs_list_the_registry() -> None:
    names = list(stages.STAGE_NAMES)
    readme = (REPO / "README.md").read_text().split("## The nightly pipeline")[1].split("\n## ")[0]
    assert re.findall(r"^\s*\d+\. \*\*(\w+)\*\*:", readme, flags=re.M) == names, "README"
    reranker = (REPO / "docs/reranker.md").read_text().split("## Stages")[1].split("```")[1]
    assert _named_stages(reranker) == names, "docs/reranker.md"
    airflow = (REPO / "docs/airflow.md").read_text().split("```")[1].split("recsys_housekeeping")[0]
    assert _named_stages(airflow) == names, "docs/airflow.md"
    table = (REPO / "docs/stages.md").read_text().split("<!-- registry -->")[1].strip()
    rows = [[c.strip(" `") for c in r.split("|")[1:-1]]
            for r in table.split("\n\n")[0].splitlines()[2:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (s.name, s.spark, ", ".join(s.needs) or "-") for s in stages.STAGES
    ], "docs/stages.md's table"
