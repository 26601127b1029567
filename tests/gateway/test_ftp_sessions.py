"""FTP session state (checklist T16): one login per session, so logging in again never takes a second
connection slot of the link; failed logins per session are capped. The FTP server runs in the test
process so that the registry's connection slots can be counted directly."""

from __future__ import annotations

import ftplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ftp import FtpGateway
from gateway.transfers import Registry
from tests.gateway.conftest import Gateway, Link, embedded_ftp
from tests.gateway.test_ftp_loops import wait_for


@dataclass
class Embedded:
    gw: Gateway
    ftp: FtpGateway
    registry: Registry

    def slots(self, link: Link) -> int:
        """Connection slots the registry holds for `link`."""
        return sum(1 for conn in self.registry.conns() if conn.link_id == link.id)

    def sessions(self) -> int:
        return sum(len(loop.sessions) for loop in self.ftp.loops)

    def login(self, user: str, password: str = "anything") -> ftplib.FTP:
        client = ftplib.FTP()
        client.connect("127.0.0.1", self.ftp.port, timeout=20)
        try:
            client.login(user, password)
        except BaseException:
            client.close()
            raise
        return client


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    with embedded_ftp(tmp_path) as parts:
        yield Embedded(*parts)


class RawFTP:
    """A control connection spoken line by line (no client logic in between)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith("220")

    def reply(self) -> str:
        """One whole reply (multi-line replies end with `NNN ` on their last line); "" at EOF."""
        line = self.file.readline().decode()
        if len(line) > 3 and line[3] == "-":
            while True:
                more = self.file.readline().decode()
                if not more or (more[:3] == line[:3] and more[3:4] == " "):
                    line = more
                    break
        return line.rstrip("\r\n")

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_t16_logging_in_twelve_times_in_one_session_keeps_one_slot(embedded: Embedded) -> None:
    link = embedded.gw.link(embedded.gw.image(size=1000))
    limit = embedded.gw.catalog.settings.gateway.max_connections_per_link
    raw = RawFTP(embedded.ftp.port)
    others: list[ftplib.FTP] = []
    try:
        assert raw.cmd(f"USER {link.token}").startswith("331")
        assert raw.cmd("PASS x").startswith("230")
        for _ in range(11):
            assert raw.cmd(f"USER {link.token}") == "530 Can't change to another user."
            assert raw.cmd("PASS x") == "503 User already authenticated."
        assert raw.cmd("REIN") == "502 REIN not implemented."
        assert embedded.slots(link) == 1
        assert raw.cmd("TYPE I").startswith("200")
        assert raw.cmd(f"SIZE {link.filename}") == "213 1000"  # still logged in, as the link
        # The link still takes its full number of sessions: this one and limit - 1 others.
        others = [embedded.login(link.token) for _ in range(limit - 1)]
        assert embedded.slots(link) == limit
        with pytest.raises(ftplib.error_perm, match="^530 Too many connections for this link"):
            embedded.login(link.token)
    finally:
        for client in others:
            client.quit()
        assert raw.cmd("QUIT").startswith("221")
        raw.close()
    wait_for(lambda: embedded.slots(link) == 0 and embedded.sessions() == 0, "slots or sessions left behind")
    embedded.login(link.token).quit()  # and every slot is free again


def test_t16_a_session_is_closed_after_two_failed_logins(embedded: Embedded) -> None:
    link = embedded.gw.link(embedded.gw.image(size=1000))
    raw = RawFTP(embedded.ftp.port)
    try:
        assert raw.cmd("REIN") == "530 Log in with USER and PASS first."  # no way to reset the count
        assert raw.cmd("USER lnk-aaaaaaaa.bad").startswith("331")
        assert raw.cmd("PASS x") == "530 This download link is not valid (expired, revoked or unknown)"
        assert raw.cmd(f"USER {link.token}x").startswith("331")
        assert raw.cmd("PASS x") == ("530 This download link is not valid (expired, revoked or unknown) Disconnecting.")
        assert raw.reply() == ""  # the server closed the connection
    finally:
        raw.close()
    wait_for(lambda: embedded.sessions() == 0, "the refused session is still open")
    assert embedded.registry.conns() == []
    assert embedded.registry.throttle.failures("127.0.0.1") == 2
    failed = embedded.registry.metrics.failed_logins.labels("ftp")._value.get()
    assert failed == 2


def test_t16_too_many_connections_is_not_a_failed_login(embedded: Embedded) -> None:
    link = embedded.gw.link(embedded.gw.image(size=1000))
    limit = embedded.gw.catalog.settings.gateway.max_connections_per_link
    sessions = [embedded.login(link.token) for _ in range(limit)]
    try:
        with pytest.raises(ftplib.error_perm, match="^530 Too many connections for this link"):
            embedded.login(link.token)
    finally:
        for session in sessions:
            session.quit()
    assert embedded.registry.throttle.failures("127.0.0.1") == 0
    wait_for(lambda: embedded.slots(link) == 0 and embedded.sessions() == 0, "slots or sessions left behind")
