"""`/metrics` on its own listener (`gateway.metrics_listen`, checklist L8): announced, off when empty,
a busy port is one clear error, and the setting's format is checked."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog.errors import Invalid
from core.catalog.settings import load_settings
from core.links import links
from tests.conftest import write_config
from tests.gateway.conftest import Gateway, make_catalog, start_server, stop_server


def get(host: str, port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_l8_metrics_listener_is_announced_and_apart_from_the_public_port(gw: Gateway) -> None:
    ports = json.loads((gw.catalog.settings.data_dir / links.PORTS_FILE).read_text())
    announced = re.search(r"imagehub serve: http=\S+ ftp=\S+ sftp=\S+ metrics=127\.0\.0\.1:(\d+)", gw.log_text())
    assert announced and int(announced.group(1)) == ports["metrics"] != gw.http
    status, body = get("127.0.0.1", ports["metrics"], "/metrics")
    assert status == 200 and b"imagehub_refusals_total" in body
    status, body = get(gw.host, gw.http, "/metrics")
    assert status == 404 and b"imagehub_" not in body
    # The metrics listener serves nothing else: no downloads through it.
    link = gw.link(gw.image(size=1000))
    path = link.http.split(f":{gw.http}", 1)[1]
    assert get("127.0.0.1", ports["metrics"], path)[0] == 404


def test_l8_empty_metrics_listen_serves_no_metrics(tmp_path: Path) -> None:
    config, catalog = make_catalog(tmp_path)
    config.write_text(config.read_text().replace('metrics_listen = "127.0.0.1:0"', 'metrics_listen = ""'))
    assert load_settings(config).gateway.metrics_address is None
    log_path = tmp_path / "serve.log"
    proc, (host, http_port, _, _) = start_server(config, tmp_path, log_path)
    try:
        ports = json.loads((catalog.settings.data_dir / links.PORTS_FILE).read_text())
        assert "metrics" not in ports
        assert get(host, http_port, "/metrics")[0] == 404
        assert get(host, http_port, "/healthz")[0] == 200
    finally:
        assert stop_server(proc) == 0
        catalog.dispose()
    assert "metrics=" not in log_path.read_text()


def test_l8_busy_metrics_port_is_one_clear_error(tmp_path: Path) -> None:
    config, catalog = make_catalog(tmp_path)
    catalog.dispose()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "IMAGEHUB_CONFIG": str(config),
            "IMAGEHUB_GATEWAY__METRICS_LISTEN": f"127.0.0.1:{port}",
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve"], capture_output=True, text=True, env=env, timeout=60
        )
    assert done.returncode == 1
    assert f"imagehub: error: the gateway cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (catalog.settings.data_dir / links.PORTS_FILE).exists()


@pytest.mark.parametrize(
    ("value", "address"),
    [("127.0.0.1:9109", ("127.0.0.1", 9109)), ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80)), ("", None)],
)
def test_metrics_listen_values(tmp_path: Path, value: str, address: tuple[str, int] | None) -> None:
    config = write_config(tmp_path, f'[gateway]\nmetrics_listen = "{value}"\n')
    assert load_settings(config).gateway.metrics_address == address


@pytest.mark.parametrize("value", ["9109", "127.0.0.1", "127.0.0.1:", ":9109", "127.0.0.1:70000", "127.0.0.1:９"])
def test_metrics_listen_must_be_host_port(tmp_path: Path, value: str) -> None:
    config = write_config(tmp_path, f'[gateway]\nmetrics_listen = "{value}"\n')
    with pytest.raises(Invalid, match=r'^invalid configuration: gateway\.metrics_listen: .*expected "HOST:PORT"'):
        load_settings(config)
