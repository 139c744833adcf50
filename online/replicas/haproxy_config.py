"""The HAProxy configuration for N replicas: the template beside this module, filled in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("haproxy.cfg.tmpl")
BACKEND = "be_recsys"


def server_name(index: int) -> str:
    """srv1, srv2, ...: 1-based, as HAProxy's stats and the X-Recsys-Replica header show."""
    return f"srv{index + 1}"


@dataclass(frozen=True)
class HaproxySettings:
    port: int
    admin_socket: Path
    replica_ports: tuple[int, ...]
    maxconn: int  # per replica
    bind_host: str = "127.0.0.1"
    replica_host: str = "127.0.0.1"
    check_inter_ms: int = 500


def render(settings: HaproxySettings) -> str:
    servers = "\n".join(
        f"    server {server_name(i)} {settings.replica_host}:{port} check"
        for i, port in enumerate(settings.replica_ports)
    )
    # safe_substitute would leave a typo'd name in the file; substitute raises on it.
    return Template(TEMPLATE.read_text()).substitute(
        admin_socket=settings.admin_socket,
        bind_host=settings.bind_host,
        port=settings.port,
        check_inter_ms=settings.check_inter_ms,
        maxconn=settings.maxconn,
        servers=servers,
    )
