"""FTP uploads (issue 14): real clients cut partway and resumed, and the refusals, against `imagehub serve`.

curl and lftp run rate-limited until `Upload.wait_received` sees bytes on disk, then get SIGINT
(a user pressing Ctrl-C) and are run again with their resume option; the protocol-level refusals
are spoken with ftplib. Every test ends with the upload imported: `available`, its sha256 the file's.
"""

from __future__ import annotations

import contextlib
import fcntl
import ftplib
import http.client
import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.catalog import db
from core.catalog.clock import utcnow
from core.catalog.models import Link
from core.catalog.settings import load_settings
from core.links import links
from tests.gateway.conftest import GATEWAY_CONFIG, Gateway, embedded_ftp, make_catalog, start_server, stop_server
from tests.gateway.test_clients import env_for, interrupt, run
from tests.gateway.test_serve import self_signed
from tests.gateway.uploadkit import Upload, create_upload, make_disk

RATE = 1 << 20  # bytes/s: the clients are cut after CUT_AT bytes arrived, a few seconds in
CUT_AT = 2 << 20
NAME = "disk.qcow2"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("upload-ftp") / NAME, data_mib=8)


def ftp_url(gw: Gateway, upload: Upload) -> str:
    return f"ftp://{upload.token}@{gw.host}:{gw.ftp}/"


def curl(gw: Gateway, upload: Upload, disk: Path, *extra: str) -> list[str]:
    return ["curl", "-sS", "--fail", "-T", disk.name, "-C", "-", *extra, ftp_url(gw, upload)]


def login(gw: Gateway, user: str) -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect(gw.host, gw.ftp, timeout=20)
    try:
        client.login(user, "any")
    except BaseException:
        client.close()
        raise
    return client


@pytest.fixture
def session(gw: Gateway) -> Iterator[list[ftplib.FTP]]:
    """ftplib sessions a test opens; closed at its end."""
    opened: list[ftplib.FTP] = []
    yield opened
    for client in opened:
        client.close()


def send(client: ftplib.FTP, cmd: str, data: bytes, rest: int | None = None) -> str:
    """One STOR/APPE of `data` over a data connection; the server's final reply (ftplib.Error if refused)."""
    client.voidcmd("TYPE I")
    # OSError: the server aborted the data connection; its reply says why
    with client.transfercmd(cmd, rest) as conn, contextlib.suppress(OSError):
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    return client.voidresp()


def refused(call: object, *args: object) -> str:
    """The error reply of an ftplib call that must fail."""
    with pytest.raises(ftplib.Error) as caught:
        call(*args)  # type: ignore[operator]
    return str(caught.value)


def finish_with_curl(gw: Gateway, upload: Upload, disk: Path) -> None:
    """The rest of the upload, as its user would send it: curl -C - (SIZE, then APPE)."""
    run(curl(gw, upload, disk), disk.parent, env_for(gw))
    upload.assert_imported(disk)


def cut_curl(gw: Gateway, upload: Upload, disk: Path) -> None:
    """curl, rate-limited, killed once CUT_AT bytes are on disk."""
    command = curl(gw, upload, disk, "--limit-rate", str(RATE))
    interrupt(command, disk.parent, env_for(gw), lambda: upload.received() >= CUT_AT)
    assert CUT_AT <= upload.received() < upload.size


def test_curl_cut_and_resumed(gw: Gateway, disk: Path) -> None:
    upload = create_upload(gw, disk)
    cut_curl(gw, upload, disk)
    finish_with_curl(gw, upload, disk)


@pytest.mark.skipif(importlib.util.find_spec("OpenSSL") is None, reason="FTPS needs pyOpenSSL (optional)")
def test_curl_over_ftps_cut_and_resumed(disk: Path, tmp_path: Path) -> None:
    """Explicit FTPS (AUTH TLS, data protected): the upload goes through the TLS data channel."""
    config, catalog = make_catalog(tmp_path / "tls")
    cert, key = self_signed(tmp_path)
    text = config.read_text().replace(GATEWAY_CONFIG, "")  # [gateway] last, with the certificate
    config.write_text(text + GATEWAY_CONFIG + f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    catalog.settings = load_settings(config)
    proc, (host, http, ftp, sftp) = start_server(config, tmp_path / "tls", tmp_path / "serve.log")
    try:
        gw = Gateway(tmp_path / "tls", config, catalog, proc, host, http, ftp, sftp, tmp_path / "serve.log")
        upload = create_upload(gw, disk)
        tls = ["--ssl-reqd", "--cacert", str(cert)]
        command = curl(gw, upload, disk, *tls, "--limit-rate", str(RATE))
        interrupt(command, disk.parent, env_for(gw), lambda: upload.received() >= CUT_AT)
        assert CUT_AT <= upload.received() < upload.size
        run(curl(gw, upload, disk, *tls), disk.parent, env_for(gw))
        upload.assert_imported(disk)
    finally:
        assert stop_server(proc) == 0
        catalog.dispose()


def test_lftp_put_c_cut_and_resumed(gw: Gateway, disk: Path) -> None:
    upload = create_upload(gw, disk)
    settings = "set net:max-retries 1; set cmd:fail-exit yes; set ftp:ssl-allow no; set ftp:passive-mode on"
    base = ["lftp", "-u", f"{upload.token},", "-p", str(gw.ftp)]
    limited = [*base, "-e", f"{settings}; set net:limit-rate {RATE}; put -c {disk.name}; bye", gw.host]
    interrupt(limited, disk.parent, env_for(gw), lambda: upload.received() >= CUT_AT)
    assert CUT_AT <= upload.received() < upload.size
    run([*base, "-e", f"{settings}; put -c {disk.name}; bye", gw.host], disk.parent, env_for(gw))
    upload.assert_imported(disk)


def bytes_received_metric(gw: Gateway) -> int:
    """`imagehub_bytes_received_total{protocol="ftp"}` from the gateway's /metrics listener."""
    ports = json.loads((gw.catalog.settings.data_dir / links.PORTS_FILE).read_text())
    conn = http.client.HTTPConnection("127.0.0.1", ports["metrics"], timeout=30)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = re.search(r'^imagehub_bytes_received_total\{protocol="ftp"\} (\S+)$', body, re.MULTILINE)
    assert found, body[-2000:]
    return int(float(found.group(1)))


def settled_metric(gw: Gateway, timeout: float = 10) -> int:
    """The counter once the bytes of transfers that ended before are in it: the registry adds them on
    its tick, about once a second, and nothing signals that tick to a client, so: two reads a tick
    apart that agree."""
    deadline = time.monotonic() + timeout
    value = bytes_received_metric(gw)
    while True:
        time.sleep(1.2)
        again = bytes_received_metric(gw)
        if again == value:
            return value
        assert time.monotonic() < deadline, "imagehub_bytes_received{protocol=ftp} does not settle"
        value = again


def wait_metric(gw: Gateway, at_least: int, timeout: float = 10) -> int:
    """Until the counter reaches `at_least` (the registry adds bytes on its tick, about once a second)."""
    deadline = time.monotonic() + timeout
    while (value := bytes_received_metric(gw)) < at_least:
        assert time.monotonic() < deadline, f"imagehub_bytes_received{{protocol=ftp}} is {value}, not {at_least}"
        time.sleep(0.1)
    return value


def test_stor_size_listings_and_the_offset_rule(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    data = disk.read_bytes()
    counted = settled_metric(gw)
    upload = create_upload(gw, disk)
    client = login(gw, upload.token)
    session.append(client)
    client.voidcmd("TYPE I")
    assert client.size(NAME) == 0  # nothing yet: any name is the upload
    head = len(data) // 3
    assert send(client, f"STOR {NAME}", data[:head]).startswith("226")
    assert upload.received() == head
    assert client.size(NAME) == head
    assert client.nlst() == [NAME]  # the listing shows the name last used
    [(name, facts)] = list(client.mlsd())
    assert name == NAME and int(facts["size"]) == head
    assert f" {head} " in client.sendcmd(f"STAT {NAME}")
    client.voidcmd("TYPE I")  # the listings switched to ASCII
    assert client.size("other-name.img") == head
    # no overwriting: STOR again (no REST), or REST anywhere but the offset
    message = refused(send, client, f"STOR {NAME}", data[:10])
    assert message.startswith("553") and f"already has {head} bytes" in message
    message = refused(send, client, f"STOR {NAME}", data[10:20], 10)
    assert message.startswith("553") and f"continue at byte {head}, not 10" in message
    message = refused(send, client, f"STOR {NAME}", data[head + 5 :], head + 5)
    assert message.startswith("553") and f"not {head + 5}" in message
    assert upload.received() == head
    # REST at the offset + STOR resumes; APPE goes on from there
    middle = 2 * len(data) // 3
    assert send(client, f"STOR {NAME}", data[head:middle], head).startswith("226")
    assert upload.received() == middle
    reply = send(client, f"APPE {NAME}", data[middle:])
    assert reply.startswith("226") and "Upload complete" in reply
    # complete: no more bytes, whatever the command
    assert refused(send, client, f"APPE {NAME}", b"x").startswith("550 This upload is complete")
    assert refused(send, client, f"STOR {NAME}", b"x", len(data)).startswith("550 This upload is complete")
    upload.assert_imported(disk)
    assert wait_metric(gw, counted + len(data)) == counted + len(data)  # refused bytes are not counted


def test_bytes_beyond_the_size_are_refused(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    data = disk.read_bytes()
    upload = create_upload(gw, disk)
    client = login(gw, upload.token)
    session.append(client)
    short = len(data) - 10
    assert send(client, f"STOR {NAME}", data[:short]).startswith("226")
    message = refused(send, client, f"APPE {NAME}", data[short:] + bytes(1 << 20))
    assert message.startswith("552") and f"takes exactly {len(data)} bytes" in message
    assert upload.received() == short  # the transfer that passed the size is dropped whole
    client.close()
    finish_with_curl(gw, upload, disk)
    upload.assert_imported(disk)


def test_nothing_but_the_upload_changes(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    upload = create_upload(gw, disk)
    cut_curl(gw, upload, disk)
    client = login(gw, upload.token)
    session.append(client)
    for command in ("DELE disk.qcow2", "MKD sub", "RMD sub", "RNFR disk.qcow2", "MFMT 20200101000000 disk.qcow2"):
        assert refused(client.sendcmd, command).startswith("550 This upload link takes one file"), command
    assert refused(client.sendcmd, "SITE CHMOD 777 disk.qcow2").startswith("500")
    message = refused(client.retrbinary, f"RETR {NAME}", lambda chunk: None)
    assert message.startswith("550 This is an upload link")
    assert refused(send, client, "STOR sub/disk.qcow2", b"x").startswith("550")
    assert refused(client.cwd, "sub").startswith("550")
    client.close()
    finish_with_curl(gw, upload, disk)


def test_a_download_token_cannot_upload(gw: Gateway, session: list[ftplib.FTP]) -> None:
    link = gw.link(gw.image(size=100_000))
    client = login(gw, link.token)
    session.append(client)
    # (pyftpdlib's permission check answers before the handler's "550 Read-only")
    assert refused(send, client, f"STOR {link.filename}", b"x").startswith("550 ")
    assert refused(send, client, f"APPE {link.filename}", b"x").startswith("550 ")
    assert refused(send, client, "STOR other.img", b"x").startswith("550 ")


def test_one_writer_at_a_time(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    upload = create_upload(gw, disk)
    second: list[str] = []

    def try_second_writer() -> bool:
        if upload.received() < CUT_AT // 2:
            return False
        if not second:
            client = login(gw, upload.token)
            session.append(client)
            second.append(refused(send, client, f"APPE {NAME}", b"x" * 100))
        return upload.received() >= CUT_AT

    command = curl(gw, upload, disk, "--limit-rate", str(RATE))
    interrupt(command, disk.parent, env_for(gw), try_second_writer)
    assert second and second[0].startswith("450") and "one writer at a time" in second[0]
    finish_with_curl(gw, upload, disk)  # its sha256 is the file's: none of the second writer's bytes landed


def stor_under_way(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> tuple[Upload, ftplib.FTP, socket.socket]:
    """A new upload, a session STORing it and its data connection, once 2 of the 3 MiB sent have arrived."""
    upload = create_upload(gw, disk)
    client = login(gw, upload.token)
    session.append(client)
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {NAME}")
    conn.sendall(disk.read_bytes()[: 3 << 20])
    upload.wait_received(2 << 20)
    return upload, client, conn


def test_a_stalled_writer_gives_way_to_a_new_one(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    """A STOR whose data connection went quiet (the client's network dropped, say) does not hold the
    upload: a new session takes it over within seconds and finishes it."""
    data = disk.read_bytes()
    upload, _first, stalled = stor_under_way(gw, disk, session)
    try:
        second = login(gw, upload.token)
        session.append(second)
        deadline = time.monotonic() + 20
        while True:  # refused (450) while the first still counts as sending, then taken over
            second.voidcmd("TYPE I")
            offset = second.size(NAME)
            try:
                reply = send(second, f"APPE {NAME}", data[offset:])
                break
            except ftplib.Error as exc:  # 450: still sending; 553: its last bytes landed meanwhile
                assert str(exc)[:3] in ("450", "553") and time.monotonic() < deadline, exc
                time.sleep(0.5)
    finally:
        stalled.close()
    assert reply.startswith("226") and "Upload complete" in reply
    upload.assert_imported(disk)


def test_abor_mid_transfer_keeps_what_arrived_and_the_upload_resumes(
    gw: Gateway, disk: Path, session: list[ftplib.FTP]
) -> None:
    """ABOR while the data connection is being read (by its own thread, off the loop): the transfer
    ends at once, what arrived stays, and curl -C - finishes the upload with the file's checksum."""
    upload, client, conn = stor_under_way(gw, disk, session)
    try:
        assert client.abort().startswith("426")  # the transfer, aborted
        assert client.getresp().startswith("226")  # the ABOR, done
    finally:
        conn.close()
    assert 2 << 20 <= upload.received() <= 3 << 20
    assert client.size(NAME) == upload.received()  # the session goes on after the abort
    finish_with_curl(gw, upload, disk)


def test_a_reset_data_connection_keeps_what_arrived(gw: Gateway, disk: Path, session: list[ftplib.FTP]) -> None:
    """A data connection reset by the client (RST, not FIN): the bytes before it are a valid start."""
    upload, client, conn = stor_under_way(gw, disk, session)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST
    reply = client.getresp()  # the transfer ended short of the upload: answered, not hung
    assert reply[:3] in ("226", "426"), reply
    assert 2 << 20 <= upload.received() <= 3 << 20
    assert disk.read_bytes()[: upload.received()] == upload.staged().read_bytes()
    finish_with_curl(gw, upload, disk)


@pytest.mark.parametrize("ending", ["revoked", "expired"])
def test_revoked_and_expired_uploads_are_cut_and_refused(gw: Gateway, disk: Path, ending: str) -> None:
    upload = create_upload(gw, disk)
    command = curl(gw, upload, disk, "--limit-rate", str(RATE))
    proc = subprocess.Popen(command, cwd=disk.parent, env=env_for(gw), stdin=subprocess.DEVNULL)
    try:
        upload.wait_received(CUT_AT)
        link_id = upload.link["id"]
        if ending == "revoked":
            done = gw.cli("link", "revoke", link_id)
            assert done.returncode == 0, done.stderr
        else:
            with db.write_session(gw.catalog.engine) as db_session:
                row = db_session.get(Link, link_id)
                assert row is not None
                row.expires_at = utcnow() - timedelta(seconds=1)
                db_session.add(row)
        assert proc.wait(30) != 0  # the gateway cut it mid-upload (within a tick)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert refused(login, gw, upload.token).startswith("530")
    assert upload.received() < upload.size


def test_waiting_for_another_writer_does_not_stall_the_loop(tmp_path: Path) -> None:
    """A Receiver waits (up to TAKEOVER_WAIT) for a writer in another process to let go of the
    upload; it is opened in a thread: a session on the same loop is answered meanwhile, the STOR
    once the other writer let go, and what the writer sent meanwhile after that, in order."""
    with embedded_ftp(tmp_path / "gw") as (gw, ftp, _registry):
        source = tmp_path / "big.img"
        source.touch()
        upload = create_upload(gw, source, size=4 << 20)
        upload.staged().parent.mkdir(parents=True, exist_ok=True)
        other_process = os.open(upload.staged(), os.O_RDWR | os.O_CREAT, 0o600)  # its writer's lock
        fcntl.flock(other_process, fcntl.LOCK_EX)
        writer, other, third = (login(gw, upload.token) for _ in range(3))
        try:
            assert [len(loop.sessions) for loop in ftp.loops] == [2, 1]  # writer and third share loop 0
            writer.voidcmd("TYPE I")
            writer.putcmd(f"STOR {NAME}")
            writer.putcmd("NOOP")
            release = upload.staged().parent / "release"
            deadline = time.monotonic() + 2
            while not release.exists():  # the other writer is asked to let go (within TAKEOVER_WAIT)
                assert time.monotonic() < deadline, "no release request"
                time.sleep(0.02)
            assert third.voidcmd("NOOP").startswith("200")  # the loop answers meanwhile
            writer.sock.setblocking(False)
            with pytest.raises(BlockingIOError):  # the STOR is not answered yet: its Receiver still waits
                writer.sock.recv(1, socket.MSG_PEEK)
            writer.sock.setblocking(True)
            os.close(other_process)  # it lets go
            other_process = -1
            assert writer.getresp().startswith("150")
            assert writer.getresp().startswith("200")
        finally:
            if other_process >= 0:
                os.close(other_process)
            for client in (writer, other, third):
                client.close()
