"""The shape rules: online/ never imports the batch side, and importing it builds nothing.

FAISS and ONNX Runtime must not be loaded by importing the app (the gunicorn master must
never touch them before the fork), and pyspark/torch/batch must never be needed at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ONLINE = Path(__file__).resolve().parents[2] / "online"
FORBIDDEN = ("pyspark", "torch", "batch")


def test_online_sources_never_import_the_batch_side() -> None:
    for path in ONLINE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_app_and_cli_loads_no_heavy_runtime() -> None:
    code = (
        "import sys, online.app, online.cli; "
        "print(','.join(m for m in ('faiss', 'onnxruntime', 'pyspark', 'torch', 'batch') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ONLINE.parent,
    )
    assert out.stdout.strip() == ""
