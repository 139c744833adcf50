"""The HAProxy configuration `recsys replicas` writes: every placeholder filled, one server
line per replica with its check, and (where haproxy is installed) accepted by `haproxy -c`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from online.replicas.haproxy_config import HaproxySettings, render, server_name


def _settings(tmp_path: Path) -> HaproxySettings:
    return HaproxySettings(port=18080, admin_socket=tmp_path / "admin.sock",
                           replica_ports=(18001, 18002, 18003), maxconn=4)  # fmt: skip


def test_render_names_every_replica_and_the_admin_socket(tmp_path: Path) -> None:
    text = render(_settings(tmp_path))
    assert "$" not in text  # no placeholder left unfilled
    servers = [line.split() for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers == [["server", f"srv{i}", f"127.0.0.1:{18000 + i}", "check"] for i in (1, 2, 3)]
    assert f"stats socket {tmp_path / 'admin.sock'} mode 600 level admin" in text
    assert "bind 127.0.0.1:18080" in text
    assert "http-check send meth GET uri /readyz" in text
    assert "maxconn 4 " in text and "rise 2 fall 2" in text
    # Only GET/HEAD are retried once sent to a replica: a POST may have had its effect.
    assert "http-request disable-l7-retry if !METH_GET !METH_HEAD" in text
    assert server_name(0) == "srv1"


def test_haproxy_accepts_the_rendered_file(tmp_path: Path) -> None:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy not installed (make setup installs it: apt-get install haproxy)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(_settings(tmp_path)))
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "[WARNING]" not in check.stdout + check.stderr  # nothing HAProxy would ignore
