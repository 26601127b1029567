"""An upload survives `kill -9` of `imagehub serve`: the client, run again against the restarted server
(same ports, as a real deployment has), continues from the bytes on disk, which the new process
hashes once; the image's checksum is the file's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from core.links import links
from tests.gateway.conftest import Gateway, make_catalog, start_server, stop_server
from tests.gateway.uploadkit import create_upload, make_disk
from tests.importkit import free_ports

MIB = 1 << 20


def _fixed_ports(config: Path) -> None:
    http, ftp, sftp = free_ports(3)
    text = config.read_text()
    for key, port in (("http_port", http), ("ftp_port", ftp), ("sftp_port", sftp)):
        text = re.sub(rf"(?m)^{key} = 0$", f"{key} = {port}", text)
    config.write_text(text)


def _metrics(root: Path) -> dict[str, float]:
    ports = json.loads((root / "var" / links.PORTS_FILE).read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def test_serve_killed_mid_upload_then_the_same_curl_command_resumes_it() -> None:
    root = Path(tempfile.mkdtemp(prefix="imagehub-up-restart-"))
    config, catalog = make_catalog(root)
    _fixed_ports(config)
    log_path = root / "serve.log"
    proc, (host, http, ftp, sftp) = start_server(config, root, log_path)
    gw = Gateway(root, config, catalog, proc, host, http, ftp, sftp, log_path)
    client: subprocess.Popen[bytes] | None = None
    try:
        disk = make_disk(root / "disk.qcow2", 24)
        upload = create_upload(gw, disk)
        command = ["curl", "-sS", "-T", str(disk), "-C", "-", upload.link["ftp"]]
        client = subprocess.Popen([*command, "--limit-rate", "2M"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        upload.wait_received(6 * MIB)
        proc.kill()  # kill -9: no clean-up of any kind
        proc.wait()
        assert client.wait(30) != 0  # the client saw its connection die
        on_disk = upload.received()
        assert 6 * MIB <= on_disk < upload.size
        proc, _ = start_server(config, root, log_path)
        gw.proc = proc
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        upload.assert_imported(disk)
        audit = gw.cli("audit", "list", account="admin").stdout
        assert {"upload.create", "upload.receive", "upload.finish"} <= set(audit.split())
        # /metrics: bytes received by protocol, and uploads by outcome (cancelled, expired too)
        cancelled = create_upload(gw, disk)
        assert gw.cli("link", "revoke", cancelled.link["id"]).returncode == 0
        expired = create_upload(gw, disk, ttl=1)
        expired.wait_ended(30)  # the worker's sweep, every few seconds
        assert expired.image().error == "upload expired"
        metrics = _metrics(root)
        assert metrics['imagehub_bytes_received_total{protocol="ftp"}'] > 0
        assert metrics["imagehub_uploads_started"] == 3
        assert metrics["imagehub_uploads_finished"] == 1
        assert metrics["imagehub_uploads_cancelled"] == 1
        assert metrics["imagehub_uploads_expired"] == 1
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        if gw.proc.poll() is None:
            stop_server(gw.proc)
        catalog.dispose()
        if not os.environ.get("IMAGEHUB_TEST_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
