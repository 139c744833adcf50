"""A child bound with shared/parent_death.py dies when its parent is SIGKILLed, and the
nightly DAG's spark-submit is bound to its task process that way (dags/_common.py): a task
runner killed mid-stage leaves no spark-submit JVM nor stage driver behind its retry.

Real processes: a parent Python process starts the child, the test SIGKILLs the parent and
watches the child's pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")

# The grandchild: reports its pid and what its stdin is, then waits to be killed.
CHILD = "import os, time; print(os.getpid(), os.readlink('/proc/self/fd/0'), flush=True); time.sleep(600)"


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":  # dead, waiting for init to reap it
            return True
        time.sleep(0.1)
    return False


def _run_parent(script: str) -> tuple[subprocess.Popen[str], int, str]:
    """Start `script` (which starts CHILD and relays its first line), return the parent,
    the child's pid and the child's stdin."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHILD": CHILD}
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env,
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout is not None
    line = parent.stdout.readline().split()
    assert len(line) == 2, f"parent said {line!r}"
    return parent, int(line[0]), line[1]


def _kill(parent: subprocess.Popen[str]) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)


def test_unbound_child_outlives_a_killed_parent() -> None:
    """The failure mode itself, so the bound case below means something."""
    parent, child, _ = _run_parent("""
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", os.environ["CHILD"]], stdout=subprocess.PIPE, text=True)
        print(p.stdout.readline(), end="", flush=True); time.sleep(600)
    """)
    try:
        _kill(parent)
        assert not _gone(child, within_s=2.0)
    finally:
        os.kill(child, signal.SIGKILL)


def test_preexec_binds_the_child_to_its_parent() -> None:
    parent, child, _ = _run_parent("""
        import os, subprocess, sys, time
        from shared.parent_death import die_with_parent_preexec
        p = subprocess.Popen([sys.executable, "-c", os.environ["CHILD"]], stdout=subprocess.PIPE,
                             text=True, preexec_fn=die_with_parent_preexec())
        print(p.stdout.readline(), end="", flush=True); time.sleep(600)
    """)
    _kill(parent)
    assert _gone(child)


def test_a_process_can_bind_itself_to_its_parent() -> None:
    """What batch/spark_entry.py does: the stage driver dies with its spark-submit JVM."""
    child_code = "from shared.parent_death import die_with_parent; assert die_with_parent(); " + CHILD
    parent, child, _ = _run_parent(f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", {child_code!r}], stdout=subprocess.PIPE, text=True)
        print(p.stdout.readline(), end="", flush=True); time.sleep(600)
    """)
    _kill(parent)
    assert _gone(child)


def test_the_dags_spark_submit_dies_with_its_task_and_not_on_its_stdin() -> None:
    """The hook RecsysSparkStageOperator uses: its spark-submit (here a stand-in command, the
    provider's own command line being built by the same hook) dies with the task process and
    reads /dev/null, not the task runner's stdin (the supervisor's request socket)."""
    pytest.importorskip("airflow.providers.apache.spark", reason="the airflow extra is not installed")
    parent, child, stdin = _run_parent(f"""
        import json, os, sys, time
        sys.path.insert(0, {str(REPO / "dags")!r})
        os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({{"conn_type": "spark", "host": "local[1]"}})
        from _common import RecsysSparkStageOperator, TaskBoundSparkSubmitHook
        hook = RecsysSparkStageOperator(stage="validate")._get_hook()
        assert type(hook) is TaskBoundSparkSubmitHook, type(hook)
        hook._build_spark_submit_command = lambda application: [sys.executable, "-c", os.environ["CHILD"]]
        hook._process_spark_submit_log = lambda lines: print(next(lines), end="", flush=True) or time.sleep(600)
        hook.submit("app.py")
    """)
    assert stdin == "/dev/null"
    _kill(parent)
    assert _gone(child)
