"""The admin SSH front door: a key's account lands in its own TUI; refusals; scripting without a terminal."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from core.accounts import keys
from core.catalog import audit
from core.catalog.catalog import Catalog
from core.catalog.models import Status
from gateway.admin_ssh import listen
from tests.conftest import People
from tests.factories import make_image

READ_TIMEOUT = 30.0


@dataclass
class Door:
    port: int
    catalog: Catalog
    keys: dict[str, asyncssh.SSHKey]
    key_files: dict[str, Path]
    images: dict[str, str]
    front_door: object = None

    def connect(self, account: str, **options) -> asyncssh.SSHClientConnection:
        return asyncssh.connect(
            "127.0.0.1", self.port, username=account, client_keys=[self.keys[account]], known_hosts=None,
            agent_path=None, **options,
        )  # fmt: skip


@pytest.fixture
async def door(catalog: Catalog, people: People, tmp_path: Path) -> AsyncIterator[Door]:
    images = {
        "acme": make_image(catalog, people.owner, Status.AVAILABLE, name="acme-web-server"),
        "globex": make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-db-server"),
    }
    client_keys, key_files = {}, {}
    for account, actor in (("acme-owner", people.owner), ("globex-owner", people.other_owner), ("stranger", None)):
        key = asyncssh.generate_private_key("ssh-ed25519", comment=account)
        client_keys[account] = key
        private = tmp_path / f"{account}.key"
        key.write_private_key(str(private))
        private.chmod(0o600)
        key.write_public_key(str(tmp_path / f"{account}.pub"))
        key_files[account] = private
        if actor is not None:
            keys.add_key(catalog, people.admin, account, tmp_path / f"{account}.pub")
    acceptor, front_door = await listen(catalog, "127.0.0.1", 0)
    yield Door(acceptor.get_port(), catalog, client_keys, key_files, images, front_door)
    acceptor.close()
    await front_door.close()
    await acceptor.wait_closed()


async def read_until(stream: asyncssh.SSHReader, pattern: bytes, seen: bytearray) -> bytes:
    """Read the session's output until `pattern` appears; returns everything read."""
    async with asyncio.timeout(READ_TIMEOUT):
        while pattern not in seen:
            chunk = await stream.read(65536)
            if not chunk:
                break
            seen.extend(chunk)
    assert pattern in seen, f"{pattern!r} not in the screen output"
    return bytes(seen)


async def open_tui(conn: asyncssh.SSHClientConnection, size: tuple[int, int] = (100, 30)):
    return await conn.create_process(term_type="xterm-256color", term_size=size, encoding=None)


async def quit_tui(process) -> int | None:
    process.stdin.write(b"q")
    async with asyncio.timeout(READ_TIMEOUT):
        while await process.stdout.read(65536):
            pass
        await process.wait_closed()
    return process.exit_status


async def test_session_shows_the_key_owners_tenant_follows_resizes_and_quits_with_0(door: Door):
    async with door.connect("acme-owner") as conn:
        process = await open_tui(conn)
        seen = bytearray()
        await read_until(process.stdout, b"acme-web-server", seen)
        assert b"globex-db-server" not in seen
        seen.clear()
        process.change_terminal_size(120, 40)
        # the app redraws for 40 rows: cursor moves to row 40 appear only after the resize reached it
        async with asyncio.timeout(READ_TIMEOUT):
            while not re.search(rb"\x1b\[40;\d+H", seen):
                seen.extend(await process.stdout.read(65536))
        assert await quit_tui(process) == 0


async def test_two_accounts_at_once_see_their_own_tenants(door: Door):
    async with door.connect("acme-owner") as acme, door.connect("globex-owner") as globex:
        first, second = await open_tui(acme), await open_tui(globex)
        acme_seen, globex_seen = bytearray(), bytearray()
        await asyncio.gather(
            read_until(first.stdout, b"acme-web-server", acme_seen),
            read_until(second.stdout, b"globex-db-server", globex_seen),
        )
        assert b"globex-db-server" not in acme_seen and b"acme-web-server" not in globex_seen
        assert await asyncio.gather(quit_tui(first), quit_tui(second)) == [0, 0]


async def test_an_unknown_key_is_refused_and_audited(door: Door):
    with pytest.raises(asyncssh.PermissionDenied):
        async with door.connect("stranger"):
            pass
    fingerprint = keys.fingerprint_of_blob(door.keys["stranger"].public_data)
    events = audit.list_events(door.catalog.engine, action="admin_ssh.login")
    refused = [e for e in events if e["outcome"] == "refused"]
    assert refused and fingerprint in refused[0]["detail"]["fingerprints"]
    assert refused[0]["detail"]["address"].startswith("127.0.0.1:")


async def test_a_key_offered_but_not_verified_does_not_decide_the_identity(door: Door):
    """asyncssh asks about every offered key, then validates and verifies the signed one last: the
    identity is that last key's account, whatever was offered before (soft-serve's lesson)."""
    from gateway.admin_ssh import AdminFrontDoor, _AdminServer

    class FakeConnection:
        extra: dict[str, str] = {}

        def get_extra_info(self, name: str, default=None):
            return ("127.0.0.1", 5555) if name == "peername" else default

        def set_extra_info(self, **values: str) -> None:
            self.extra.update(values)

    server = _AdminServer(AdminFrontDoor(door.catalog))
    connection = FakeConnection()
    server.connection_made(connection)  # type: ignore[arg-type]
    assert server.validate_public_key("x", door.keys["globex-owner"])  # offered (query, no signature)
    assert server.validate_public_key("x", door.keys["acme-owner"])  # the signed request that succeeds
    server.auth_completed()
    assert connection.extra["imagehub_account"] == "acme-owner"


async def test_a_removed_key_cannot_open_a_new_session(door: Door, people: People):
    async with door.connect("acme-owner") as conn:
        process = await open_tui(conn)
        await read_until(process.stdout, b"acme-web-server", bytearray())
        fingerprint = keys.fingerprint_of_blob(door.keys["acme-owner"].public_data)
        keys.remove_key(door.catalog, people.admin, "acme-owner", fingerprint)
        with pytest.raises(asyncssh.PermissionDenied):
            async with door.connect("acme-owner"):
                pass
        assert await quit_tui(process) == 0


async def test_without_a_terminal_commands_run_as_the_account(door: Door):
    async with door.connect("acme-owner") as conn:
        listing = await conn.run("image list --json", check=False)
        assert listing.exit_status == 0
        assert [i["name"] for i in json.loads(listing.stdout)] == ["acme-web-server"]
        foreign = await conn.run(f"imagehub image show {door.images['globex']}", check=False)
        assert foreign.exit_status == 3 and "not found" in foreign.stderr
        bare = await conn.run(check=False)  # `ssh -T host`: a shell request without a PTY
        assert bare.exit_status == 1 and "this service needs a terminal (use ssh -t)" in bare.stderr
        for smuggled in ("image list --as admin", "image list --config=/etc/x.toml", "serve"):
            refused = await conn.run(smuggled, check=False)
            assert refused.exit_status == 2, smuggled


async def test_forwarding_is_refused(door: Door):
    async with door.connect("acme-owner") as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", door.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelOpenError):  # no SFTP/SCP on the admin door
            await conn.run(subsystem="sftp", check=False)


@pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("tmux") is None, reason="needs ssh and tmux")
async def test_openssh_client_shows_the_app(door: Door, tmp_path: Path):
    session = f"imagehub-admin-{door.port}"
    command = (
        f"ssh -tt -p {door.port} -i {door.key_files['acme-owner']} -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR acme-owner@127.0.0.1"
    )
    env = {"TERM": "xterm-256color", "PATH": "/usr/bin:/bin"}
    subprocess.run(["tmux", "-L", session, "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
                   check=True, env=env)  # fmt: skip
    try:
        screen = ""
        async with asyncio.timeout(READ_TIMEOUT):
            while "acme-web-server" not in screen:
                await asyncio.sleep(0.2)  # polling tmux's screen: there is no event to await
                screen = subprocess.run(["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                                        capture_output=True, text=True).stdout  # fmt: skip
        assert "globex-db-server" not in screen
        subprocess.run(["tmux", "-L", session, "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "-L", session, "kill-server"], capture_output=True)


async def test_serve_opens_the_admin_door_and_stops_cleanly(door: Door, config_path: Path):
    import os
    import signal
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin_port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env.update(IMAGEHUB_CONFIG=str(config_path), IMAGEHUB_GATEWAY__HTTP_PORT="0", IMAGEHUB_GATEWAY__FTP_PORT="0",
               IMAGEHUB_GATEWAY__SFTP_PORT="0", IMAGEHUB_GATEWAY__FTP_PASSIVE_PORTS="",
               IMAGEHUB_GATEWAY__METRICS_LISTEN="127.0.0.1:0",
               IMAGEHUB_GATEWAY__ADMIN_SSH_PORT=str(admin_port))  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "serve", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            line = (await server.stdout.readline()).decode()
        assert f"admin_ssh=127.0.0.1:{admin_port}" in line
        door.port = admin_port
        async with door.connect("globex-owner") as conn:
            listing = await conn.run("image list --json", check=False)
        assert [i["name"] for i in json.loads(listing.stdout)] == ["globex-db-server"]
    finally:
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(READ_TIMEOUT):
            assert await server.wait() == 0


async def test_session_cap_and_idle_timeout(door: Door):
    door.front_door.max_sessions = 1
    async with door.connect("acme-owner") as conn:
        process = await open_tui(conn)
        await read_until(process.stdout, b"acme-web-server", bytearray())
        door.front_door.idle_timeout = 1.0  # checked again within 5 s
        second = await conn.run("image list", check=False)
        assert second.exit_status == 1 and "too many admin sessions" in second.stderr
        # no keyboard input: the idle watch ends the session and says why
        async with asyncio.timeout(READ_TIMEOUT):
            while await process.stdout.read(65536):
                pass
            await process.wait_closed()
        assert "idle timeout" in (await process.stderr.read()).decode()
