"""Gateway fixtures: one `imagehub serve` subprocess per test module on ports 0, against a catalog of its own.

Starting the server costs about a second, so a module shares one (`gw`); each test makes its own
images and links, so tests do not depend on each other. Every test is also checked, as pyftpdlib's
suite does, for threads and file descriptors it leaves behind in the test process.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.accounts.accounts import create_account, create_tenant
from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.settings import load_settings
from core.images.images import new_image
from core.jobs import jobs
from core.jobs.worker import Worker
from core.links import links
from core.rules.access import Actor, resolve_actor
from core.setup.bootstrap import initialise
from tests.conftest import REPO, write_config

GATEWAY_CONFIG = """
[gateway]
host = "127.0.0.1"
http_port = 0
ftp_port = 0
sftp_port = 0
ftp_passive_ports = ""
ftp_threads = 2
idle_timeout_seconds = 60
max_connections_per_link = 8
metrics_listen = "127.0.0.1:0"  # /metrics apart from the public port; port 0: any free one
# Refusal tests fail many logins from 127.0.0.1: no delays here (tests/gateway/test_login_backoff.py
# turns them on for its own servers); failures are still counted.
login_backoff_max_seconds = 0
"""
READY = re.compile(r"imagehub serve: http=([\d.]+):(\d+) ftp=[\d.]+:(\d+) sftp=[\d.]+:(\d+)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Gateway:
    root: Path
    config: Path
    catalog: Catalog
    proc: subprocess.Popen[str]
    host: str
    http: int
    ftp: int
    sftp: int
    log_path: Path
    actors: dict[str, Actor] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
        env["IMAGEHUB_CONFIG"] = str(self.config)
        env["HOME"] = str(self.root / "home")
        return env

    def actor(self, name: str) -> Actor:
        if name not in self.actors:
            with db.read_session(self.catalog.engine) as session:
                self.actors[name] = resolve_actor(session, name)
        return self.actors[name]

    def image(self, size: int = 3_000_001, tenant: str = "acme", account: str = "acme-owner") -> str:
        """An available raw image whose stored file holds `size` random bytes."""
        actor = self.actor(account)
        with db.write_session(self.catalog.engine) as session:
            from core.images.images import tenant_id_by_name

            image = new_image(
                session,
                actor,
                tenant_id_by_name(session, tenant),
                name="gw-test",
                description="",
                os_type="Linux",
                platform="CentOS",
                os_version="7.9",
                arch="x86_64",
                status="available",
                target_size_gb=20,
                disk_format="raw",
                virtual_size=size,
            )
            image_id = image.id
        path = self.catalog.store.image_path(image_id, "raw")
        with path.open("wb") as handle:
            left = size
            while left:
                chunk = secrets.token_bytes(min(left, 1 << 20))
                handle.write(chunk)
                left -= len(chunk)
        return image_id

    def link(self, image_id: str, fmt: str = "raw", ttl: int | None = None, account: str = "acme-owner") -> Link:
        created = links.create_link(self.catalog, self.actor(account), image_id, fmt, ttl)
        if created.job_id is not None:
            worker = Worker(self.catalog, kinds=["export"], max_concurrent=1, label="test")
            try:
                job = worker.run_until(created.job_id, timeout=60)
            finally:
                worker.join()
            assert job is not None and job.state == jobs.DONE, job
        view = links.describe(self.catalog, created.view["id"], created.token)
        return Link(self, view, created.token)

    def cli(self, *args: str, account: str = "acme-owner", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = self.env
        env["IMAGEHUB_ACCOUNT"] = account
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=timeout,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Link:
    gw: Gateway
    view: dict[str, Any]
    token: str

    @property
    def id(self) -> str:
        return self.view["id"]

    @property
    def filename(self) -> str:
        return self.view["filename"]

    @property
    def sha256(self) -> str:
        return self.view["sha256"]

    @property
    def size(self) -> int:
        return self.view["size"]

    @property
    def http(self) -> str:
        return self.view["http"]

    @property
    def ftp(self) -> str:
        return self.view["ftp"]

    @property
    def sftp(self) -> str:
        return self.view["sftp"]

    @property
    def path(self) -> Path:
        served = links.validate_token(self.gw.catalog, self.token)
        return served.path

    def revoke(self) -> None:
        links.revoke_link(self.gw.catalog, self.gw.actor("acme-owner"), self.id)


def start_server(config: Path, root: Path, log_path: Path) -> tuple[subprocess.Popen[str], tuple[str, int, int, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(config)
    log_handle = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve"],
        stdout=subprocess.PIPE,
        stderr=log_handle,
        text=True,
        env=env,
        cwd=root,
    )
    log_handle.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its ports once everything listens
    match = READY.search(line)
    if not match:
        proc.kill()
        proc.wait()
        raise AssertionError(f"imagehub serve did not start: {line!r}\n{log_path.read_text()}")
    return proc, (match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4)))


def stop_server(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    if proc.stdout is not None:
        proc.stdout.close()
    return code


def make_catalog(root: Path) -> tuple[Path, Catalog]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    config = write_config(root, GATEWAY_CONFIG)
    catalog, _ = initialise(load_settings(config))
    with db.read_session(catalog.engine) as session:
        admin = resolve_actor(session, "admin")
    create_tenant(catalog, admin, "acme")
    create_tenant(catalog, admin, "globex")
    create_account(catalog, admin, "acme-owner", tenant="acme", role="owner")
    create_account(catalog, admin, "acme-viewer", tenant="acme", role="member", perm="view")
    create_account(catalog, admin, "globex-owner", tenant="globex", role="owner")
    return config, catalog


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    # Not under pytest's basetemp: concurrent pytest sessions on this machine prune each other's.
    root = Path(tempfile.mkdtemp(prefix="imagehub-gw-"))
    config, catalog = make_catalog(root)
    log_path = root / "serve.log"
    proc, (host, http, ftp, sftp) = start_server(config, root, log_path)
    gateway = Gateway(root, config, catalog, proc, host, http, ftp, sftp, log_path)
    try:
        yield gateway
    finally:
        code = stop_server(proc)
        catalog.dispose()
        if code == 0 and not os.environ.get("IMAGEHUB_TEST_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        assert code == 0, f"imagehub serve exited {code}\n{log_path.read_text()[-3000:]}"


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Like pyftpdlib's suite: a test leaves no thread and no file descriptor behind."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    deadline = time.monotonic() + 5
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        extra_fds = _open_fds() - fds_before
        # SQLite's WAL files stay open with a pooled connection: only count what is not the catalog.
        extra_fds = {fd for fd in extra_fds if not _is_catalog_fd(fd)}
        if not extra_threads and not extra_fds:
            return
        if time.monotonic() > deadline:
            names = {fd: _fd_target(fd) for fd in extra_fds}
            raise AssertionError(f"leaked threads {extra_threads} / fds {names}")
        time.sleep(0.05)


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _is_catalog_fd(fd: int) -> bool:
    target = _fd_target(fd)
    return "catalog.db" in target or target == "?"


REPO_ROOT = REPO


@contextmanager
def embedded_ftp(root: Path) -> Iterator[tuple[Gateway, Any, Any]]:
    """An FTP gateway run in the test process (its loops and slots can be looked at), with a catalog
    under `root`; on exit the loops' threads must have ended. Yields (gateway handle, FtpGateway, Registry)."""
    from gateway.ftp import FtpGateway
    from gateway.transfers import Registry

    config, catalog = make_catalog(root)
    registry = Registry(catalog)
    ftp = FtpGateway(registry, "127.0.0.1", 0)
    ftp.start()
    try:
        gw = Gateway(root, config, catalog, None, "127.0.0.1", 0, ftp.port, 0, root / "none.log")  # type: ignore[arg-type]
        yield gw, ftp, registry
    finally:
        ftp.stop()
        assert not any(loop.thread.is_alive() for loop in ftp.loops)
        catalog.dispose()
