"""FTP on several IO loops, embedded in the test process so that the loops can be looked at: sessions
are spread evenly, parallel downloads of one link all arrive whole, a revoke cuts the transfers of
every loop, and stopping leaves no thread or descriptor behind (the autouse `no_leaks` check)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ftp import FtpGateway
from gateway.transfers import Registry
from tests.gateway.conftest import Gateway, Link, embedded_ftp, sha256_file
from tests.gateway.test_refusals import ftp_login, slow_socket

LOOPS = 2  # tests/gateway/conftest.py GATEWAY_CONFIG: ftp_threads = 2


@dataclass
class Embedded:
    gw: Gateway
    ftp: FtpGateway
    registry: Registry

    def url(self, link: Link) -> str:
        return f"ftp://{link.token}@127.0.0.1:{self.ftp.port}/{link.filename}"

    def loads(self) -> list[int]:
        """Sessions per loop (once every connection is taken: what the acceptor counted)."""
        sessions = [len(loop.sessions) for loop in self.ftp.loops]
        assert sessions == [loop.load for loop in self.ftp.loops]
        return sessions

    def logged_in(self, link: Link) -> int:
        return sum(1 for conn in self.registry.conns() if conn.link_id == link.id)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    with embedded_ftp(tmp_path) as parts:
        yield Embedded(*parts)


@pytest.fixture
def ticking(embedded: Embedded) -> Iterator[None]:
    """`Registry.tick` every 0.2 s in a thread, as `imagehub serve` runs it every second."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.2):
            embedded.registry.tick()

    thread = threading.Thread(target=run, name="test-ticker")
    thread.start()
    yield
    stop.set()
    thread.join()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_gateway_runs_the_configured_number_of_loops(embedded: Embedded) -> None:
    assert len(embedded.ftp.loops) == LOOPS
    assert all(loop.thread.is_alive() for loop in embedded.ftp.loops)


def test_sessions_are_spread_evenly_over_the_loops(embedded: Embedded) -> None:
    limit = embedded.gw.catalog.settings.gateway.max_connections_per_link
    link = embedded.gw.link(embedded.gw.image(size=1000))
    sessions = []
    try:
        for count in range(1, limit + 1):
            sessions.append(ftp_login(embedded.gw, link.token))
            assert sorted(embedded.loads()) == sorted(count // LOOPS + (i < count % LOOPS) for i in range(LOOPS))
        for session in sessions[: limit // 2]:
            session.quit()
        del sessions[: limit // 2]
        wait_for(lambda: sum(embedded.loads()) == len(sessions), "sessions that quit are still counted")
        for _ in range(limit // 2):  # newcomers fill the loops that have the fewest
            sessions.append(ftp_login(embedded.gw, link.token))
        assert embedded.loads() == [limit // LOOPS] * LOOPS
    finally:
        for session in sessions:
            session.close()
    wait_for(lambda: embedded.loads() == [0] * LOOPS, "sessions left open")


def test_parallel_ftp_downloads_of_one_link_arrive_whole(
    embedded: Embedded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagehub.access")
    streams = embedded.gw.catalog.settings.gateway.max_connections_per_link
    link = embedded.gw.link(embedded.gw.image(size=20 * 1024 * 1024 + 3))
    clients = [
        subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", str(tmp_path / f"dl-{i}"), embedded.url(link)], stdin=subprocess.DEVNULL
        )
        for i in range(streams)
    ]
    assert [client.wait(60) for client in clients] == [0] * streams
    for i in range(streams):
        assert sha256_file(tmp_path / f"dl-{i}") == link.sha256
        (tmp_path / f"dl-{i}").unlink()
    wait_for(lambda: caplog.text.count("status=complete") == streams, caplog.text[-2000:])
    assert caplog.text.count(f"link={link.id} proto=ftp") == streams
    assert caplog.text.count(f"bytes={link.size} status=complete") == streams
    wait_for(lambda: embedded.loads() == [0] * LOOPS, "sessions left open")


def test_revoke_cuts_transfers_on_every_loop(
    embedded: Embedded, ticking: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagehub.access")
    streams = 2 * LOOPS
    link = embedded.gw.link(embedded.gw.image(size=48 * 1024 * 1024))
    going = [threading.Event() for _ in range(streams)]

    def download(started: threading.Event) -> tuple[int, float]:
        """Read slowly until the server ends the transfer; bytes read and when it ended."""
        ftp = ftp_login(embedded.gw, link.token)
        try:
            ftp.voidcmd("TYPE I")
            sock = slow_socket(*ftp.makepasv())
            ftp.sendcmd(f"RETR {link.filename}")
            got = 0
            with sock:
                try:
                    while chunk := sock.recv(16 * 1024):
                        got += len(chunk)
                        if got >= 256 * 1024:
                            started.set()
                        time.sleep(0.005)
                except (ConnectionError, TimeoutError):
                    pass
            return got, time.monotonic()
        finally:
            started.set()
            ftp.close()

    with ThreadPoolExecutor(streams) as pool:
        results = [pool.submit(download, event) for event in going]
        for event in going:
            assert event.wait(20)
        assert embedded.loads() == [streams // LOOPS] * LOOPS
        link.revoke()
        revoked = time.monotonic()
        ended = [result.result(30) for result in results]
    for got, when in ended:
        assert got < link.size, "a transfer finished instead of being cut"
        assert when - revoked < 5, f"cut only after {when - revoked:.1f} s"
    wait_for(lambda: caplog.text.count("status=cut-revoked") == streams, caplog.text[-2000:])
    wait_for(lambda: embedded.loads() == [0] * LOOPS, "sessions left open")
