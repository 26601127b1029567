"""Refusals on all three protocols: expired, tampered, revoked, image deleted, access lost; other files,
path traversal and symlinks; every write command; and running transfers cut within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncssh
import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.models import Account, Tenant
from core.images import images
from core.links import links
from tests.gateway.conftest import Gateway, Link, sha256_file
from tests.gateway.test_http import request

# ---- the three protocols, each asked to refuse ------------------------------------------------


def http_status(gw: Gateway, token: str, name: str) -> int:
    return request(gw, f"/d/{quote(token, safe='')}/{quote(name, safe='')}")[0]


def ftp_login(gw: Gateway, user: str, password: str = "anything") -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect(gw.host, gw.ftp, timeout=20)
    try:
        ftp.login(user, password)
    except BaseException:
        ftp.close()
        raise
    return ftp


def assert_ftp_refused(gw: Gateway, token: str) -> None:
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp_login(gw, token)


async def sftp_connect(gw: Gateway, token: str, **options: object) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        gw.host, gw.sftp, username=token, known_hosts=None, client_keys=None, agent_path=None, **options
    )


async def assert_sftp_refused(gw: Gateway, token: str) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        conn = await sftp_connect(gw, token)
        conn.close()
    with pytest.raises(asyncssh.PermissionDenied):
        conn = await sftp_connect(gw, token, password=token)
        conn.close()


async def assert_refused_everywhere(gw: Gateway, token: str, name: str) -> None:
    assert http_status(gw, token, name) == 403
    assert http_status(gw, token, name + ".sha256") == 403
    assert_ftp_refused(gw, token)
    await assert_sftp_refused(gw, token)


# ---- tokens that are no longer (or never were) good -------------------------------------------


async def test_expired_token_refused_on_all_protocols(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000), ttl=1)
    assert http_status(gw, link.token, link.filename) == 200
    expires = links.describe(gw.catalog, link.id)["expires_at"]
    assert expires is not None
    deadline = time.monotonic() + 3
    while links.check_links(gw.catalog, [link.id])[link.id] != "expired":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    await assert_refused_everywhere(gw, link.token, link.filename)
    assert links.describe(gw.catalog, link.id)["state"] == "expired"


async def test_tampered_token_refused_on_all_protocols(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000))
    other = gw.link(gw.image(size=1000))
    _head, rest = link.token.split(".", 1)
    other_head = other.token.split(".", 1)[0]
    flipped = link.token[:-1] + ("A" if link.token[-1] != "A" else "B")
    for bad in (flipped, f"{other_head}.{rest}", link.token + "x", link.token.upper(), "lnk-aaaaaaaa", ""):
        if bad:
            await assert_refused_everywhere(gw, bad, link.filename)
    assert http_status(gw, link.token, link.filename) == 200


async def test_revoked_token_refused_on_all_protocols(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000))
    link.revoke()
    await assert_refused_everywhere(gw, link.token, link.filename)
    assert links.describe(gw.catalog, link.id)["state"] == "revoked"


async def test_deleted_image_refused_on_all_protocols(gw: Gateway) -> None:
    image_id = gw.image(size=1000)
    link = gw.link(image_id)
    results = images.delete_images(gw.catalog, gw.actor("acme-owner"), [image_id])
    assert results[0].ok
    await assert_refused_everywhere(gw, link.token, link.filename)
    images.restore_images(gw.catalog, gw.actor("acme-owner"), [image_id])
    # Restoring the image does not bring its links back: they were revoked with the deletion.
    assert http_status(gw, link.token, link.filename) == 403


async def test_lost_access_refused_on_all_protocols(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000), account="acme-viewer")
    assert http_status(gw, link.token, link.filename) == 200
    move_account(gw, "acme-viewer", "globex")
    try:
        await assert_refused_everywhere(gw, link.token, link.filename)
    finally:
        move_account(gw, "acme-viewer", "acme")


def move_account(gw: Gateway, name: str, tenant: str) -> None:
    with db.write_session(gw.catalog.engine) as session:
        account = session.exec(select(Account).where(Account.name == name)).one()
        account.tenant_id = session.exec(select(Tenant).where(Tenant.name == tenant)).one().id
        session.add(account)


# ---- other files, traversal, symlinks ---------------------------------------------------------


@pytest.fixture(scope="module")
def pair(gw: Gateway) -> tuple[Link, Link]:
    link = gw.link(gw.image(size=100_000))
    other = gw.link(gw.image(size=100_000))
    store = gw.catalog.store
    # A symlink planted beside the stored files must never be followed or shown.
    (store.images_dir / "planted.raw").symlink_to(gw.catalog.secret_path)
    return link, other


BAD_NAMES = ("other", "../secret.key", "/etc/passwd", "../../../../etc/passwd", "planted.raw", "..", ".")


def bad_names(pair: tuple[Link, Link]) -> list[str]:
    _link, other = pair
    return [other.filename if n == "other" else n for n in BAD_NAMES] + [f"../images/{other.filename}"]


def test_http_serves_only_the_links_file(gw: Gateway, pair: tuple[Link, Link]) -> None:
    link, _ = pair
    for name in bad_names(pair):
        assert http_status(gw, link.token, name) == 403, name
    assert request(gw, f"/d/{link.token}/../../secret.key")[0] in (403, 404)
    assert request(gw, f"/d/{link.token}/%2e%2e/%2e%2e/secret.key")[0] in (403, 404)


def test_ftp_jail_holds_only_the_file_and_its_sum(gw: Gateway, pair: tuple[Link, Link], tmp_path: Path) -> None:
    link, _ = pair
    ftp = ftp_login(gw, link.token)
    try:
        assert sorted(ftp.nlst()) == sorted([link.filename, link.filename + ".sha256"])
        listing = []
        ftp.retrlines("LIST", listing.append)
        assert len(listing) == 2 and all(" imagehub " in line for line in listing)
        facts = dict(ftp.mlsd())
        assert facts[link.filename]["size"] == str(link.size) and facts[link.filename]["type"] == "file"
        ftp.voidcmd("TYPE I")
        assert ftp.size(link.filename) == link.size
        assert ftp.sendcmd(f"MDTM {link.filename}").startswith("213 ")
        for name in bad_names(pair):
            with pytest.raises(ftplib.error_perm, match="^55"):
                ftp.retrbinary(f"RETR {name}", lambda _data: None)
        for path in ("..", "/etc", "../images", "/.."):
            with contextlib.suppress(ftplib.error_perm):
                ftp.cwd(path)
            assert ftp.pwd() == "/"
            assert sorted(ftp.nlst()) == sorted([link.filename, link.filename + ".sha256"])
        chunks: list[bytes] = []
        ftp.retrbinary(f"RETR {link.filename}.sha256", chunks.append)
        assert b"".join(chunks).decode() == f"{link.sha256}  {link.filename}\n"
    finally:
        ftp.quit()


async def test_sftp_jail_holds_only_the_file_and_its_sum(gw: Gateway, pair: tuple[Link, Link]) -> None:
    link, _ = pair
    async with await sftp_connect(gw, link.token) as conn, conn.start_sftp_client() as sftp:
        for folder in (".", "/", "..", "/..", "../.."):
            names = sorted(n for n in await sftp.listdir(folder) if n not in (".", ".."))
            assert names == sorted([link.filename, link.filename + ".sha256"]), folder
        assert (await sftp.stat(link.filename)).size == link.size
        for name in bad_names(pair):
            if name in ("..", "."):
                continue
            with pytest.raises(asyncssh.SFTPError):
                async with sftp.open(name, "rb") as handle:
                    await handle.read(10)
            with pytest.raises(asyncssh.SFTPError):
                await sftp.stat(name)
        with pytest.raises(asyncssh.SFTPError):
            await sftp.readlink(link.filename)
        async with sftp.open(link.filename, "rb") as handle:
            block = await handle.read(256 * 1024, 1000)
        assert block == link.path.read_bytes()[1000 : 1000 + 256 * 1024]


# ---- writes ------------------------------------------------------------------------------------


def test_every_ftp_write_command_is_refused(gw: Gateway, tmp_path: Path) -> None:
    link = gw.link(gw.image(size=10_000))
    before = sorted(p.name for p in gw.catalog.store.images_dir.iterdir())
    ftp = ftp_login(gw, link.token)
    try:
        ftp.voidcmd("TYPE I")
        payload = tmp_path / "payload"
        payload.write_bytes(b"x" * 100)
        for command in (f"STOR {link.filename}", "STOR new.raw", f"APPE {link.filename}", "STOU"):
            with payload.open("rb") as handle, pytest.raises(ftplib.error_perm, match="^5"):
                ftp.storbinary(command, handle)
        for command in (
            f"DELE {link.filename}",
            "MKD newdir",
            "RMD ..",
            f"RNFR {link.filename}",
            "RNTO stolen.raw",
            f"SITE CHMOD 777 {link.filename}",
            "SITE HELP",
            f"MFMT 20200101000000 {link.filename}",
        ):
            with pytest.raises(ftplib.error_perm, match="^5"):
                ftp.sendcmd(command)
    finally:
        ftp.quit()
    assert sorted(p.name for p in gw.catalog.store.images_dir.iterdir()) == before
    assert sha256_file(link.path) == link.sha256


async def test_every_sftp_write_is_refused(gw: Gateway, tmp_path: Path) -> None:
    link = gw.link(gw.image(size=10_000))
    before = sorted(p.name for p in gw.catalog.store.images_dir.iterdir())
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 100)
    name = link.filename
    async with await sftp_connect(gw, link.token) as conn, conn.start_sftp_client() as sftp:
        attempts: list[Callable[[], object]] = [
            lambda: sftp.open(name, "wb"),
            lambda: sftp.open(name, "r+b"),
            lambda: sftp.open(name, "ab"),
            lambda: sftp.open("new.raw", "wb"),
            lambda: sftp.put(str(payload), "new.raw"),
            lambda: sftp.remove(name),
            lambda: sftp.rename(name, "stolen.raw"),
            lambda: sftp.posix_rename(name, "stolen.raw"),
            lambda: sftp.mkdir("newdir"),
            lambda: sftp.rmdir("/"),
            lambda: sftp.symlink("/etc/passwd", "link"),
            lambda: sftp.link(name, "hard"),
            lambda: sftp.chmod(name, 0o777),
            lambda: sftp.utime(name, (0, 0)),
            lambda: sftp.setstat(name, asyncssh.SFTPAttrs(permissions=0o777)),
        ]
        for attempt in attempts:
            with pytest.raises(asyncssh.SFTPError):
                result = attempt()
                if hasattr(result, "__aenter__"):
                    async with result as handle:  # type: ignore[union-attr]
                        await handle.write(b"x")
                else:
                    await result  # type: ignore[misc]
        async with sftp.open(name, "rb") as handle:
            with pytest.raises(asyncssh.SFTPError):
                await handle.write(b"x", 0)
            with pytest.raises(asyncssh.SFTPError):
                await handle.chmod(0o777)
    assert sorted(p.name for p in gw.catalog.store.images_dir.iterdir()) == before
    assert sha256_file(link.path) == link.sha256


async def test_sftp_offers_no_shell_exec_or_forwarding(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000))
    async with await sftp_connect(gw, link.token) as conn:
        with pytest.raises((asyncssh.ChannelOpenError, asyncssh.ProcessError, OSError)):
            result = await conn.run("cat /etc/passwd", check=True, timeout=10)
            assert result.exit_status != 0
        with pytest.raises((asyncssh.ChannelOpenError, OSError)):
            await conn.forward_local_port("127.0.0.1", 0, gw.host, gw.http)
            await conn.open_connection(gw.host, gw.http)


# ---- running transfers are cut ----------------------------------------------------------------

# Larger than what loopback socket buffers hold, so that the transfer is still running when cut.
BIG = 48 * 1024 * 1024


TRIGGER = 256 * 1024


def slow_socket(host: str, port: int) -> socket.socket:
    """A client socket with a small receive buffer, so the server cannot push the whole file ahead."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(20)
    sock.connect((host, port))
    return sock


def read_slowly(sock: socket.socket, trigger: Callable[[], None]) -> tuple[int, float]:
    """Read 16 KiB every 5 ms; call `trigger` after TRIGGER bytes; return bytes read and seconds after it."""
    got, fired = 0, None
    try:
        while True:
            chunk = sock.recv(16 * 1024)
            if not chunk:
                break
            got += len(chunk)
            if fired is None and got >= TRIGGER:
                trigger()
                fired = time.monotonic()
            time.sleep(0.005)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        sock.close()
    assert fired is not None, "the transfer never got going"
    return got, time.monotonic() - fired


def cut_http(gw: Gateway, link: Link, trigger: Callable[[], None]) -> tuple[int, float]:
    sock = slow_socket(gw.host, gw.http)
    path = urlsplit(link.http).path
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {gw.host}\r\n\r\n".encode())
    return read_slowly(sock, trigger)


def cut_ftp(gw: Gateway, link: Link, trigger: Callable[[], None]) -> tuple[int, float]:
    ftp = ftp_login(gw, link.token)
    try:
        ftp.voidcmd("TYPE I")
        host, port = ftp.makepasv()
        sock = slow_socket(host, port)
        ftp.sendcmd(f"RETR {link.filename}")
        return read_slowly(sock, trigger)
    finally:
        ftp.close()


async def cut_sftp(gw: Gateway, link: Link, trigger: Callable[[], None]) -> tuple[int, float]:
    got, fired = 0, None
    try:
        async with (
            await sftp_connect(gw, link.token) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(link.filename, "rb") as handle,
        ):
            while True:
                block = await handle.read(32 * 1024, got)
                if not block:
                    break
                got += len(block)
                if fired is None and got >= TRIGGER:
                    await asyncio.to_thread(trigger)
                    fired = time.monotonic()
                await asyncio.sleep(0.005)
    except (asyncssh.Error, ConnectionError, OSError):
        pass
    assert fired is not None, "the transfer never got going"
    return got, time.monotonic() - fired


async def run_cut(gw: Gateway, proto: str, link: Link, trigger: Callable[[], None]) -> None:
    if proto == "sftp":
        got, after = await cut_sftp(gw, link, trigger)
    else:
        got, after = await asyncio.to_thread(cut_http if proto == "http" else cut_ftp, gw, link, trigger)
    assert got < link.size, "the transfer finished instead of being cut"
    assert after < 5, f"cut only after {after:.1f} s"


@pytest.mark.parametrize("proto", ["http", "ftp", "sftp"])
async def test_revoke_cuts_running_transfer(gw: Gateway, proto: str) -> None:
    link = gw.link(gw.image(size=BIG))
    await run_cut(gw, proto, link, link.revoke)
    assert links.describe(gw.catalog, link.id)["state"] == "revoked"
    deadline = time.monotonic() + 5
    while f"link={link.id} proto={proto}" not in gw.log_text() or "status=cut-revoked" not in gw.log_text():
        assert time.monotonic() < deadline, gw.log_text()[-2000:]
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("proto", "how"), [("http", "delete"), ("ftp", "access"), ("sftp", "delete")])
async def test_delete_or_lost_access_cuts_running_transfer(gw: Gateway, proto: str, how: str) -> None:
    account = "acme-viewer" if how == "access" else "acme-owner"
    image_id = gw.image(size=BIG)
    link = gw.link(image_id, account=account)

    def delete() -> None:
        assert images.delete_images(gw.catalog, gw.actor("acme-owner"), [image_id])[0].ok

    if how == "delete":
        await run_cut(gw, proto, link, delete)
    else:
        try:
            await run_cut(gw, proto, link, lambda: move_account(gw, "acme-viewer", "globex"))
        finally:
            move_account(gw, "acme-viewer", "acme")


def test_bytes_served_are_accounted(gw: Gateway, tmp_path: Path) -> None:
    link = gw.link(gw.image(size=300_000))
    subprocess.run(["curl", "-sS", "-o", str(tmp_path / "a"), link.http], check=True)
    subprocess.run(["curl", "-sS", "-o", str(tmp_path / "b"), link.ftp], check=True)
    subprocess.run(["curl", "-sS", "-k", "-o", str(tmp_path / "c"), link.sftp], check=True)
    deadline = time.monotonic() + 10
    while links.describe(gw.catalog, link.id)["bytes_served"] < 3 * 300_000:
        assert time.monotonic() < deadline, links.describe(gw.catalog, link.id)
        time.sleep(0.1)
    assert links.describe(gw.catalog, link.id)["bytes_served"] == 3 * 300_000


async def test_connection_limit_per_link_on_ftp_and_sftp(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000))
    limit = gw.catalog.settings.gateway.max_connections_per_link
    sessions = [ftp_login(gw, link.token) for _ in range(limit // 2)]
    conns = [await sftp_connect(gw, link.token) for _ in range(limit - len(sessions))]
    try:
        with pytest.raises(ftplib.error_perm, match="^530 Too many connections"):
            ftp_login(gw, link.token)
        with pytest.raises(asyncssh.PermissionDenied):
            await sftp_connect(gw, link.token)
        other = gw.link(gw.image(size=1000))  # the limit is per link
        ftp_login(gw, other.token).quit()
        sessions.pop().quit()
        deadline = time.monotonic() + 5
        while True:
            try:
                sessions.append(ftp_login(gw, link.token))
                break
            except ftplib.error_perm:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        for session in sessions:
            session.quit()
        for conn in conns:
            conn.close()
            await conn.wait_closed()
