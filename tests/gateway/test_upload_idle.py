"""An HTTP upload whose body stops arriving is cut after `gateway.idle_timeout_seconds` (HTTP
downloads are not: a slow reader is served), so that it neither holds the upload nor a connection
of the link for ever; the next writer then goes on."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.gateway.conftest import Gateway, make_catalog, start_server, stop_server
from tests.gateway.uploadkit import create_upload, make_disk

IDLE = 2


def test_a_stalled_http_upload_is_cut_when_idle_and_the_next_writer_goes_on() -> None:
    root = Path(tempfile.mkdtemp(prefix="imagehub-up-idle-"))
    config, catalog = make_catalog(root)
    config.write_text(config.read_text().replace("idle_timeout_seconds = 60", f"idle_timeout_seconds = {IDLE}"))
    log_path = root / "serve.log"
    proc, (host, http, ftp, sftp) = start_server(config, root, log_path)
    gw = Gateway(root, config, catalog, proc, host, http, ftp, sftp, log_path)
    try:
        disk = make_disk(root / "disk.qcow2", 4)
        upload = create_upload(gw, disk)
        data = disk.read_bytes()
        path = urlsplit(upload.link["http"]).path
        with socket.create_connection((host, http), timeout=30) as stalled:
            stalled.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            stalled.sendall(data[:100_000])
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):  # a cut connection is reset
                while stalled.recv(65536):  # until the gateway closes it (an answer may come first)
                    pass
            waited = time.monotonic() - started
        assert IDLE <= waited < IDLE + 10
        assert "cut: idle" in gw.log_text()
        offset = upload.received()
        done = subprocess.run(["curl", "-sS", "--fail", "-C", str(offset), "-T", str(disk), upload.link["http"]],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        upload.assert_imported(disk)
    finally:
        if gw.proc.poll() is None:
            stop_server(gw.proc)
        catalog.dispose()
        shutil.rmtree(root, ignore_errors=True)
