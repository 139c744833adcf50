"""`recsys_bundle_info` says what each worker serves now, not everything it ever served.

Multiprocess mode (as under gunicorn) cannot remove a series: the value stays in the
worker's file. The check runs in a fresh interpreter with PROMETHEUS_MULTIPROC_DIR set
before prometheus_client is imported, as gunicorn_conf arranges for a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
from online import metrics
metrics.set_bundle_info("run-a", "als-dot", None)
metrics.set_bundle_info("run-b", "onnx-int8", ("run-a", "als-dot"))
metrics.set_bundle_info("run-a", "als-dot", ("run-b", "onnx-int8"))
text = metrics.render().decode()
print("\\n".join(l for l in text.splitlines() if l.startswith("recsys_bundle_info{")))
"""


def _bundle_lines(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.splitlines()


def test_bundle_info_after_a_b_a_reports_only_the_served_bundle(tmp_path: Path) -> None:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    lines = _bundle_lines(env)
    assert len(lines) == 1, lines
    assert 'run_id="run-a"' in lines[0] and 'scorer="als-dot"' in lines[0]
    assert lines[0].endswith(" 1.0")


def test_bundle_info_without_multiprocess_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    lines = _bundle_lines(env | {"PYTHONPATH": str(REPO)})
    assert lines == ['recsys_bundle_info{run_id="run-a",scorer="als-dot"} 1.0']
