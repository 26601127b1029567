"""Test kit for the import pipeline: image fixtures made with qemu-img/qemu-io, and real servers
on 127.0.0.1 (HTTP with ranges and a request log, HTTPS with a CA made here, FTP with pyftpdlib).

Every disk made here carries an MBR (one partition from 1 MiB), as an import requires a partition
table, file system or boot sector (`import.require_disk_structure`); `structure=False` makes the
bare disk that requirement refuses.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import io
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job
from core.importer.diskprobe import mbr
from core.importer.submit import submit_import
from core.jobs import jobs
from core.jobs.worker import Worker
from core.rules.access import Actor

GIB = 1 << 30
PATTERN = 0xAB
PATTERN_OFFSET = 1 << 20
PATTERN_LENGTH = 64 << 10
MBR_WRITE = 64 << 10
OS = {"os_type": "Linux", "platform": "CentOS", "arch": "x86_64", "os_version": "7.9"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` (state on disk or in the catalog, which sends no event) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def random_raw(folder: Path, name: str, mib: int) -> Path:
    """A raw disk of `mib` MiB of random bytes after its MBR (no holes: every byte takes space)."""
    path = folder / name
    with open(path, "wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(1 << 20))
        handle.seek(0)
        handle.write(mbr(mib << 20))
    return path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def write_pattern(path: Path, fmt: str) -> None:
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {PATTERN} {PATTERN_OFFSET} {PATTERN_LENGTH}", str(path)],
        check=True,
        capture_output=True,
    )


def write_mbr(path: Path, fmt: str) -> None:
    """Write an MBR (one partition from 1 MiB to the end) into the disk `path` of format `fmt`."""
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)], check=True, capture_output=True, text=True
    )
    sector = path.with_name(path.name + ".mbr")
    # 64 KiB: a streamOptimized vmdk takes whole grains only
    sector.write_bytes(mbr(int(json.loads(info.stdout)["virtual-size"])).ljust(MBR_WRITE, b"\0"))
    try:
        subprocess.run(
            ["qemu-io", "-f", fmt, "-c", f"write -s {sector} 0 {MBR_WRITE}", str(path)], check=True, capture_output=True
        )
    finally:
        sector.unlink()


def make_disk(
    folder: Path, fmt: str, size: str = "64M", *, options: str = "", pattern: bool = True, structure: bool = True
) -> Path:
    """A small sparse disk in `fmt` (qemu's name): an MBR (unless `structure` is false) and a known
    pattern at 1 MiB (unless `pattern` is false)."""
    path = folder / f"disk-{fmt}-{abs(hash(options)) % 10000}.{fmt}"
    args = ["create", "-q", "-f", fmt]
    if options:
        args += ["-o", options]
    qemu_img(*args, str(path), size)
    if structure:
        write_mbr(path, fmt)
    if pattern:
        write_pattern(path, fmt)
    return path


def make_iso(folder: Path, name: str = "install.iso") -> Path:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3)
    data = b"imagehub installer\n" * 1000
    iso.add_fp(io.BytesIO(data), len(data), "/README.TXT;1")
    path = folder / name
    iso.write(str(path))
    iso.close()
    return path


OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>{files}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info></VirtualSystem>
</Envelope>
"""


def ovf_text(disk_names: list[str]) -> str:
    files = "".join(f'<File ovf:id="file{i}" ovf:href="{n}"/>' for i, n in enumerate(disk_names))
    disks = "".join(
        f'<Disk ovf:diskId="disk{i}" ovf:fileRef="file{i}" ovf:capacity="67108864"/>' for i in range(len(disk_names))
    )
    return OVF.format(files=files, disks=disks)


def make_ova(folder: Path, disk: Path, *, ovf: str | None = None, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """An OVA (ustar) with an OVF and `disk`; `extra` members are added as they are (hostile cases)."""
    path = folder / "appliance.ova"
    ovf_bytes = (ovf if ovf is not None else ovf_text([disk.name])).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("appliance.ovf")
        info.size = len(ovf_bytes)
        tar.addfile(info, io.BytesIO(ovf_bytes))
        tar.add(disk, arcname=disk.name)
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


def import_and_wait(
    catalog: Catalog, actor: Actor, *, timeout: float = 60, size_gb: int = 20, tenant: str | None = None, **source: Any
) -> Image:
    """Submit an import and run a worker until it ends; returns the image row."""
    view = submit_import(catalog, actor, name="imported", size_gb=size_gb, tenant=tenant, **OS, **source)
    run_job(catalog, view["job_id"], timeout)
    return image_row(catalog, view["id"])


def run_job(catalog: Catalog, job_id: int, timeout: float = 60, kind: str = "import") -> Job:
    """Run a worker for jobs of `kind` until job `job_id` has ended; returns the job."""
    worker = Worker(catalog, kinds=[kind], poll_seconds=0.05)
    try:
        job = worker.run_until(job_id, timeout=timeout)
        assert job is not None and job.state not in jobs.ACTIVE_STATES, f"job {job_id} did not end"
    finally:
        worker.join()
    return job


def image_row(catalog: Catalog, image_id: str) -> Image:
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        return image


def leftovers(catalog: Catalog) -> list[str]:
    """Files left in staging or the store."""
    store = catalog.store
    folders = (store.staging_dir, store.images_dir)
    return sorted(str(p.relative_to(store.data_dir)) for d in folders for p in d.iterdir())


# ---- HTTP -----------------------------------------------------------------------------------


@dataclass
class HttpBehaviour:
    """What the test HTTP server does; every request is logged in `requests`."""

    files: dict[str, Path] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    send_length: bool = True
    ranges: bool = True
    cut_after: int | None = None  # first GET of a file: close the connection after this many bytes
    hold_after: int | None = None  # first GET of a file: after this many bytes, wait until `release` is set
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(behaviour: HttpBehaviour) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            b = behaviour
            with b._lock:
                b.requests.append({"path": self.path, "range": self.headers.get("Range"), "host": self.headers["Host"]})
                first = sum(1 for r in b.requests if r["path"] == self.path) == 1
            if self.path in b.redirects:
                self.send_response(302)
                self.send_header("Location", b.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path in b.status or self.path not in b.files:
                code = b.status.get(self.path, 404)
                body = b"<html>nope</html>"
                self.send_response(code)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            path = b.files[self.path]
            size = path.stat().st_size
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and b.ranges:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", b.content_type)
            self.send_header("ETag", '"v1"')
            if b.send_length:
                self.send_header("Content-Length", str(size - start))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            limit = b.cut_after if (first and b.cut_after is not None) else None
            with open(path, "rb") as handle:
                handle.seek(start)
                sent = 0
                while chunk := handle.read(64 * 1024):
                    if limit is not None and sent + len(chunk) > limit:
                        chunk = chunk[: limit - sent]
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        b.sent += len(chunk)
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if first and b.hold_after is not None and sent >= b.hold_after:
                        b.reached.set()
                        b.release.wait(30)
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    with b._lock:
                        b.sent += len(chunk)

    return Handler


@contextmanager
def http_server(behaviour: HttpBehaviour, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `behaviour` on 127.0.0.1, port 0; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        behaviour.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


# ---- TLS ------------------------------------------------------------------------------------


def make_ca_and_server_cert(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (written to ca.pem) and a server context whose certificate it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagehub test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context


# ---- FTP ------------------------------------------------------------------------------------


def free_ports(count: int = 4) -> list[int]:
    """Ports free on 127.0.0.1 just now (for a server that needs its ports named in advance)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def ftp_server(
    root: Path,
    user: str,
    password: str,
    dtp_handler: type | None = None,
    rest: bool = True,
    *,
    passive_ports: list[int] | None = None,
    masquerade_address: str | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """pyftpdlib on 127.0.0.1, port 0, one user; yields the base URL (no credentials) and a command log.
    Passive data ports come from `passive_ports` (else any), PASV replies name `masquerade_address`."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    commands: list[str] = []

    class Handler(FTPHandler):
        def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
            commands.append(cmd if cmd == "PASS" else line)
            if cmd == "REST" and not rest:
                self.respond("502 Command not implemented.")
                return
            super().pre_process_command(line, cmd, arg)

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elr")
    Handler.authorizer = authorizer
    Handler.banner = "test ftp"
    Handler.auth_failed_timeout = 0.01
    Handler.passive_ports = passive_ports
    Handler.masquerade_address = masquerade_address
    if dtp_handler is not None:
        Handler.dtp_handler = dtp_handler
        Handler.use_sendfile = False
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05, "blocking": True}, daemon=True)
    thread.start()
    try:
        yield f"ftp://127.0.0.1:{server.address[1]}", commands
    finally:
        server.close_all()
        thread.join(5)
