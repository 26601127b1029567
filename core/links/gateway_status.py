"""Whether the `imagehub serve` of this data folder is up: its PID alive and its HTTP port answering.

`serve` writes data_dir/serve.pid and data_dir/gateway-ports.json once every port is bound, and
removes them when it stops; a serve killed outright leaves them behind, and its PID may be reused,
so the PID is signalled (signal 0) and the HTTP port connected to. Cheap enough for a timer: two
small files, a signal and a connection to a local port.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from core.catalog.errors import Msg
from core.catalog.settings import Settings
from core.catalog.storage import SERVE_PID_FILE
from core.links.links import PORTS_FILE

WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


@dataclass(frozen=True)
class GatewayStatus:
    running: bool
    pid: int | None = None
    reason: Msg | None = None  # why it is not running


def serve_pid(data_dir: Path) -> int | None:
    """The PID `imagehub serve` announced in data_dir/serve.pid, or None."""
    try:
        return int((data_dir / SERVE_PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user
        return True
    return True


def serve_alive(data_dir: Path) -> bool:
    """Whether the process that announced itself in data_dir/serve.pid still exists."""
    pid = serve_pid(data_dir)
    return pid is not None and pid_alive(pid)


def _http_port(settings: Settings, pid: int) -> int:
    """The port serve bound for HTTP (the configured one, or the one it picked for port 0)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        bound = json.loads((settings.data_dir / PORTS_FILE).read_text())
        if bound.get("pid") == pid and isinstance(bound.get("http"), int):
            return int(bound["http"])
    return settings.gateway.http_port


def gateway_status(settings: Settings, *, timeout: float = 1.0) -> GatewayStatus:
    """Whether serve runs for `settings.data_dir` and answers on its HTTP port; if not, why."""
    pid = serve_pid(settings.data_dir)
    if pid is None:
        return GatewayStatus(False, None, Msg("no imagehub serve runs for {data_dir}", data_dir=settings.data_dir))
    if not pid_alive(pid):
        return GatewayStatus(False, pid, Msg("imagehub serve (pid {pid}) has stopped", pid=pid))
    host = WILDCARD_HOSTS.get(settings.gateway.host, settings.gateway.host)
    port = _http_port(settings, pid)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return GatewayStatus(
            False,
            pid,
            Msg(
                "imagehub serve (pid {pid}) does not answer on {host}:{port}: {reason}",
                pid=pid,
                host=host,
                port=port,
                reason=exc.strerror or type(exc).__name__,
            ),
        )
    return GatewayStatus(True, pid)
