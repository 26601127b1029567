"""`imagehub serve` as a process: clean stop on SIGTERM/SIGINT (exit 0) even mid-transfer, HTTPS, idle
timeouts; and, embedded in the test process, no thread or file descriptor left once it stops."""

from __future__ import annotations

import asyncio
import datetime
import ftplib
import hashlib
import importlib.util
import ipaddress
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.catalog.settings import load_settings
from core.links import links
from tests.gateway.conftest import (
    GATEWAY_CONFIG,
    Gateway,
    _open_fds,
    make_catalog,
    sha256_file,
    start_server,
    stop_server,
)
from tests.gateway.test_refusals import cut_http


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_mid_transfer(tmp_path: Path, sig: int) -> None:
    config, catalog = make_catalog(tmp_path)
    proc, (host, http_port, _, _) = start_server(config, tmp_path, tmp_path / "serve.log")
    try:
        data_dir = catalog.settings.data_dir
        assert (data_dir / "serve.pid").read_text().strip() == str(proc.pid)
        assert (data_dir / links.PORTS_FILE).exists()
        gw = Gateway(tmp_path, config, catalog, proc, host, http_port, 0, 0, tmp_path / "serve.log")
        link = gw.link(gw.image(size=48 * 1024 * 1024))

        def stop_now() -> None:
            proc.send_signal(sig)

        got, after = cut_http(gw, link, stop_now)
        assert got < link.size and after < 10
        assert proc.wait(20) == 0
        assert not (data_dir / "serve.pid").exists() and not (data_dir / links.PORTS_FILE).exists()
        log = (tmp_path / "serve.log").read_text()
        assert "imagehub serve: stopped" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        catalog.dispose()


def free_port_range(count: int) -> int:
    """The first of `count` consecutive ports free right now on 127.0.0.1."""
    import random
    import socket

    for _ in range(200):
        first = random.randrange(40000, 60000)
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free port range")


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_and_idle_timeouts(tmp_path: Path) -> None:
    config, catalog = make_catalog(tmp_path)
    cert, key = self_signed(tmp_path)
    text = config.read_text().replace(GATEWAY_CONFIG, "")
    first = free_port_range(4)
    gateway = GATEWAY_CONFIG.replace("idle_timeout_seconds = 60", "idle_timeout_seconds = 1").replace(
        'ftp_passive_ports = ""', f'ftp_passive_ports = "{first}-{first + 3}"'
    )
    config.write_text(text + gateway + f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    catalog.settings = load_settings(config)
    proc, (host, http_port, ftp_port, sftp_port) = start_server(config, tmp_path, tmp_path / "serve.log")
    try:
        gw = Gateway(tmp_path, config, catalog, proc, host, http_port, ftp_port, sftp_port, tmp_path / "serve.log")
        link = gw.link(gw.image(size=100_000))
        assert link.http.startswith(f"https://{host}:{http_port}/d/")
        out = tmp_path / "out"
        done = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(cert), "-o", str(out), link.http])
        assert done.returncode == 0 and sha256_file(out) == link.sha256

        if importlib.util.find_spec("OpenSSL") is not None:  # FTPS needs pyOpenSSL (optional)
            ftps = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(cert)))
            ftps.connect(host, ftp_port, timeout=10)
            ftps.login(link.token, "x")  # AUTH TLS first, then USER/PASS encrypted
            ftps.prot_p()
            chunks: list[bytes] = []
            ftps.retrbinary(f"RETR {link.filename}", chunks.append)
            assert hashlib.sha256(b"".join(chunks)).hexdigest() == link.sha256
            ftps.quit()

        ftp = ftplib.FTP()
        ftp.connect(host, ftp_port, timeout=10)
        ftp.login(link.token, "x")
        assert first <= ftp.makepasv()[1] <= first + 3, "passive ports come from gateway.ftp_passive_ports"
        ftp.sock.settimeout(10)
        with pytest.raises(ftplib.error_temp, match="^421"):
            ftp.getresp()  # nothing asked: the server speaks only to close the idle session
        ftp.close()

        conn = await asyncssh.connect(
            host, sftp_port, username=link.token, known_hosts=None, client_keys=None, agent_path=None
        )
        sftp = await conn.start_sftp_client()
        await asyncio.wait_for(conn.wait_closed(), 8)
        sftp.exit()
    finally:
        assert stop_server(proc) == 0
        catalog.dispose()


def test_embedded_gateway_leaves_no_thread_or_fd_behind(tmp_path: Path) -> None:
    from gateway.server import serve

    config, catalog = make_catalog(tmp_path)
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: dict[str, int] = {}
    ready = threading.Event()

    def started(bound: dict[str, int]) -> None:
        ports.update(bound)
        ready.set()

    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(
            loop.run_until_complete(serve(catalog, announce=False, stop=stop, started=started))
        )
    )
    runner.start()
    try:
        assert ready.wait(30)
        gw = Gateway(tmp_path, config, catalog, None, "127.0.0.1", ports["http"], ports["ftp"], ports["sftp"], tmp_path)  # type: ignore[arg-type]
        link = gw.link(gw.image(size=500_000))
        for proto in ("http", "ftp", "sftp"):
            out = tmp_path / proto
            subprocess.run(["curl", "-sS", "-k", "--fail", "-o", str(out), getattr(link, proto)], check=True)
            assert sha256_file(out) == link.sha256
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)
    loop.close()
    assert result == [0]
    catalog.dispose()
    deadline = time.monotonic() + 5
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before]
        fds = {fd: _target(fd) for fd in _open_fds() - fds_before}
        if not threads and not fds:
            break
        assert time.monotonic() < deadline, f"leaked threads {threads}, fds {fds}"
        time.sleep(0.05)


def _target(fd: int) -> str:
    import os

    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    import socket
    import sys

    config, catalog = make_catalog(tmp_path)
    catalog.dispose()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"IMAGEHUB_CONFIG": str(config), "IMAGEHUB_GATEWAY__SFTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve"], capture_output=True, text=True, env=env, timeout=60
        )
    assert done.returncode == 1
    assert "imagehub: error: the gateway cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (catalog.settings.data_dir / links.PORTS_FILE).exists()


def test_pasv_announces_the_public_host_behind_a_balancer() -> None:
    from gateway.ftp import parse_port_range, passive_address

    assert passive_address("", "127.0.0.1") is None
    assert passive_address("127.0.0.1", "127.0.0.1") is None
    assert passive_address("localhost", "0.0.0.0") == "127.0.0.1"
    assert parse_port_range("30000-30002") == [30000, 30001, 30002]
    assert parse_port_range("") is None
    with pytest.raises(ValueError):
        parse_port_range("5-1")


def test_sigterm_releases_the_lease_of_a_running_job(tmp_path: Path) -> None:
    from core.jobs import jobs

    config, catalog = make_catalog(tmp_path)
    proc, (host, http_port, ftp_port, sftp_port) = start_server(config, tmp_path, tmp_path / "serve.log")
    try:
        gw = Gateway(tmp_path, config, catalog, proc, host, http_port, ftp_port, sftp_port, tmp_path / "serve.log")
        image_id = gw.image(size=1000)
        with catalog.store.image_path(image_id, "raw").open("r+b") as handle:
            handle.truncate(64 * 1024**3)  # sparse: hashing it keeps the server's worker busy for a while
        created = links.create_link(catalog, gw.actor("acme-owner"), image_id, "raw")
        assert created.job_id is not None
        deadline = time.monotonic() + 20
        while not ((job := jobs.get(catalog.engine, created.job_id)) and job.state == "running" and job.bytes_done):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job.lease_owner and job.lease_owner.startswith("serve@")
        assert stop_server(proc) == 0
        job = jobs.get(catalog.engine, created.job_id)
        assert job is not None and job.state == "queued" and job.lease_owner is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        catalog.dispose()
