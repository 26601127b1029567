"""Failed-login backoff per address (gateway/throttle.py) on HTTP, FTP and SFTP: past a few failures
from 127.0.0.1 each further failure is answered later, a valid token still gets through at once
(even while a failure of the same address is being held back), and every failure is counted in
`imagehub_failed_logins_total`. The servers run in the test process on ports 0, so that their
registry can be read; the clients are real ones (aiohttp, ftplib, asyncssh)."""

from __future__ import annotations

import asyncio
import ftplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncssh
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from core.catalog.catalog import Catalog
from core.links.links import REFUSAL_MESSAGE
from gateway import http, sftp
from gateway.ftp import FtpGateway, GatewayFTPHandler
from gateway.throttle import MAX_ADDRESSES, LoginThrottle, address_key
from gateway.transfers import Registry
from tests.gateway.conftest import Gateway, make_catalog

AFTER = 2  # failures let through at full speed
CAP = 1.5  # seconds: delays go 1 s, then 1.5 s
FAST = 0.5  # an answer that was not held back comes well within this
BAD_TOKEN = "lnk-aaaaaaaa.not-a-signature"
T = TypeVar("T")


def backoff_on(catalog: Catalog) -> Registry:
    """A registry whose throttle lets AFTER failures through, then delays up to CAP."""
    gw = catalog.settings.gateway
    gw.login_backoff_after = AFTER
    gw.login_backoff_max_seconds = CAP
    gw.ftp_threads = 1  # a held-back failure and a good login share the one loop
    return Registry(catalog)


def failed(registry: Registry, protocol: str) -> float:
    return registry.metrics.failed_logins.labels(protocol)._value.get()


async def timed(coro: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll without blocking the event loop (the HTTP and SFTP servers run on it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def held_back(registry: Registry, attempt: Awaitable[T]) -> asyncio.Future[tuple[T, float]]:
    """Start a failing `attempt` and return once the server has counted it (and so holds it back)."""
    before = registry.throttle.failures("127.0.0.1")
    late = asyncio.ensure_future(timed(attempt))
    await until(lambda: registry.throttle.failures("127.0.0.1") > before, "the failure was not counted")
    return late


# ---- the throttle itself ----------------------------------------------------------------------


def test_delays_double_past_the_threshold_up_to_the_cap_and_expire_after_the_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(3, 8.0, 60.0, clock=lambda: now[0])
    assert [throttle.failed("10.0.0.1", "http") for _ in range(7)] == [0, 0, 0, 1, 2, 4, 8]
    assert throttle.failed("10.0.0.1", "http") == 8  # capped
    assert throttle.pending("10.0.0.2") == 0  # per address
    now[0] = 61.0  # a minute without failures: forgotten
    assert throttle.failures("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1", "http") == 0


def test_memory_is_bounded_and_ipv6_counts_per_64() -> None:
    throttle = LoginThrottle(1, 4.0, 600.0)
    for i in range(MAX_ADDRESSES + 50):
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "ftp")
    assert throttle.tracked() == MAX_ADDRESSES
    assert throttle.failures("10.0.0.0") == 0  # the oldest went first
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert LoginThrottle(1, 0.0, 600.0).failed("10.0.0.1", "ftp") == 0  # max 0: counted, never delayed


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class Served:
    gw: Gateway
    registry: Registry
    http: int
    sftp: int


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config, catalog = make_catalog(tmp_path)
    registry = backoff_on(catalog)
    runner = web.AppRunner(http.make_app(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    acceptor = await sftp.listen(registry, "127.0.0.1", 0, catalog.settings.data_dir / "ssh_host_ed25519_key")
    try:
        http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        gw = Gateway(tmp_path, config, catalog, None, "127.0.0.1", http_port, 0, acceptor.get_port(), tmp_path / "x")  # type: ignore[arg-type]
        yield Served(gw, registry, http_port, acceptor.get_port())
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        await runner.cleanup()
        catalog.dispose()


async def http_get(port: int, token: str, name: str) -> int:
    """The status; a refusal's body must be the one generic message."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/d/{token}/{name}") as response,
    ):
        body = await response.read()
        if response.status == 403:
            assert body.decode() == REFUSAL_MESSAGE + "\n"
        return response.status


async def test_http_bad_tokens_slow_down_and_a_good_one_passes_at_once(served: Served) -> None:
    link = served.gw.link(served.gw.image(size=1000))
    times = []
    for _ in range(AFTER + 2):
        status, took = await timed(http_get(served.http, BAD_TOKEN, link.filename))
        assert status == 403
        times.append(took)
    assert max(times[:AFTER]) < FAST, times
    assert times[AFTER] >= 1.0 and times[AFTER + 1] >= CAP, times
    # A bad token held back does not hold back the good one sent after it from the same address.
    late = await held_back(served.registry, http_get(served.http, BAD_TOKEN, link.filename))
    status, took = await timed(http_get(served.http, link.token, link.filename))
    assert status == 200 and took < FAST
    assert not late.done()  # the good answer came first
    assert (await late)[1] >= CAP
    # The success did not clear the count: the next failure still waits the longest.
    assert (await timed(http_get(served.http, BAD_TOKEN, link.filename)))[1] >= CAP
    assert failed(served.registry, "http") == AFTER + 4
    assert b'imagehub_failed_logins_total{protocol="http"} 6.0' in generate_latest(served.registry.metrics.registry)
    await until(lambda: served.registry.conns() == [], "HTTP downloads left open")


async def test_http_wrong_file_name_with_a_good_token_is_not_a_failed_login(served: Served) -> None:
    link = served.gw.link(served.gw.image(size=1000))
    for _ in range(AFTER + 2):
        status, took = await timed(http_get(served.http, link.token, "other.raw"))
        assert status == 403 and took < FAST
    assert served.registry.throttle.failures("127.0.0.1") == 0
    assert failed(served.registry, "http") == 0


# ---- SFTP -------------------------------------------------------------------------------------


async def sftp_login(port: int, username: str, password: str | None = None) -> None:
    """Log in and read the file list; raises asyncssh.PermissionDenied when refused."""
    async with (
        asyncssh.connect(
            "127.0.0.1", port, username=username, password=password, known_hosts=None, client_keys=None, agent_path=None
        ) as conn,
        conn.start_sftp_client() as client,
    ):
        await client.listdir("/")


async def refused_sftp_login(port: int, username: str, password: str | None = None) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await sftp_login(port, username, password)


async def test_sftp_bad_tokens_slow_down_and_a_good_one_passes_at_once(served: Served) -> None:
    link = served.gw.link(served.gw.image(size=1000))
    # A user name that is no token (a password client's) is not a failed login; the token as password works.
    await sftp_login(served.sftp, "anonymous", link.token)
    assert served.registry.throttle.failures("127.0.0.1") == 0
    times = [(await timed(refused_sftp_login(served.sftp, BAD_TOKEN)))[1] for _ in range(AFTER + 2)]
    assert times[AFTER] - max(times[:AFTER]) >= 0.9, times
    assert times[AFTER + 1] - max(times[:AFTER]) >= CAP - 0.1, times
    late = await held_back(served.registry, refused_sftp_login(served.sftp, "anonymous", BAD_TOKEN))
    _, took = await timed(sftp_login(served.sftp, link.token))
    assert took < max(times[:AFTER]) + FAST
    assert not late.done()
    await late
    assert failed(served.registry, "sftp") == AFTER + 3
    await until(lambda: served.registry.conns() == [], "SFTP sessions left open")


# ---- FTP --------------------------------------------------------------------------------------


@dataclass
class Ftp:
    gw: Gateway
    registry: Registry
    port: int


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[Ftp]:
    config, catalog = make_catalog(tmp_path)
    registry = backoff_on(catalog)
    server = FtpGateway(registry, "127.0.0.1", 0)
    server.start()
    try:
        gw = Gateway(tmp_path, config, catalog, None, "127.0.0.1", 0, server.port, 0, tmp_path / "x")  # type: ignore[arg-type]
        yield Ftp(gw, registry, server.port)
    finally:
        server.stop()
        catalog.dispose()


def ftp_login(port: int, user: str) -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect("127.0.0.1", port, timeout=20)
    try:
        client.login(user, "x")
    except BaseException:
        client.close()
        raise
    return client


def refused_ftp_login(port: int, user: str) -> float:
    """Seconds from PASS to the 530."""
    client = ftplib.FTP()
    client.connect("127.0.0.1", port, timeout=20)
    try:
        client.sendcmd(f"USER {user}")
        started = time.monotonic()
        with pytest.raises(ftplib.error_perm, match="^530 This download link is not valid"):
            client.sendcmd("PASS x")
        return time.monotonic() - started
    finally:
        client.close()


async def test_ftp_bad_tokens_slow_down_and_a_good_one_passes_at_once(ftp_server: Ftp) -> None:
    link = ftp_server.gw.link(ftp_server.gw.image(size=1000))
    base = GatewayFTPHandler.auth_failed_timeout  # pyftpdlib's own delay for every failure
    times = [await asyncio.to_thread(refused_ftp_login, ftp_server.port, BAD_TOKEN) for _ in range(AFTER + 2)]
    assert all(base <= took < base + FAST for took in times[:AFTER]), times
    assert times[AFTER] >= 1.0 and times[AFTER + 1] >= CAP, times
    # While a failure waits for its 530, the one loop still serves a good login at once.
    late = await held_back(ftp_server.registry, asyncio.to_thread(refused_ftp_login, ftp_server.port, BAD_TOKEN))
    client, took = await timed(asyncio.to_thread(ftp_login, ftp_server.port, link.token))
    try:
        assert took < FAST
        assert not late.done()
    finally:
        client.quit()
    assert (await late)[0] >= CAP
    assert failed(ftp_server.registry, "ftp") == AFTER + 3
    await until(lambda: ftp_server.registry.conns() == [], "FTP sessions left open")
