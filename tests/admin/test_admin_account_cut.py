"""Admin SSH sessions follow their account: deleted, moved to another tenant or given another perm,
the open session ends at once (within the door's check period) and says why; other sessions go on."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from core.accounts import accounts, keys
from core.catalog import audit
from tests.admin import test_admin_ssh
from tests.admin.test_admin_ssh import READ_TIMEOUT, Door, open_tui, quit_tui, read_until
from tests.conftest import People

door = test_admin_ssh.door  # the same front door on port 0, with acme and globex images

ACCOUNT = "acme-manager"


@pytest.fixture
def manager_key(door: Door, people: People, tmp_path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=ACCOUNT)
    key.write_public_key(str(tmp_path / "manager.pub"))
    keys.add_key(door.catalog, people.admin, ACCOUNT, tmp_path / "manager.pub")
    door.keys[ACCOUNT] = key
    return key


async def ends_with(process: asyncssh.SSHClientProcess, started: float) -> tuple[int | None, str, float]:
    """Wait for the session's end: its exit status, its stderr and the seconds it took after `started`."""
    async with asyncio.timeout(READ_TIMEOUT):
        while await process.stdout.read(65536):
            pass
        await process.wait_closed()
    took = time.monotonic() - started
    return process.exit_status, (await process.stderr.read()).decode(errors="replace"), took


@pytest.fixture(params=["default", "nohup"])
def hangup(request: pytest.FixtureRequest) -> Iterator[None]:
    """`nohup`: the gateway runs with SIGHUP ignored, as under `nohup imagehub serve &`; its sessions'
    children inherit that, and must still end at the door's SIGHUP."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN) if request.param == "nohup" else None
    yield
    if previous is not None:
        signal.signal(signal.SIGHUP, previous)


async def test_deleting_an_account_ends_its_open_tui_at_once_and_no_other(
    door: Door, people: People, manager_key: asyncssh.SSHKey, hangup: None
) -> None:
    async with door.connect(ACCOUNT) as conn, door.connect("acme-owner") as owners:
        process, bystander = await open_tui(conn), await open_tui(owners)
        await read_until(process.stdout, b"acme-web-server", bytearray())
        await read_until(bystander.stdout, b"acme-web-server", bytearray())
        started = time.monotonic()
        await asyncio.to_thread(accounts.delete_account, door.catalog, people.admin, ACCOUNT)
        status, stderr, took = await ends_with(process, started)
        assert status == 1
        assert f"session closed: account {ACCOUNT} was deleted" in stderr
        assert took < door.front_door.account_check_seconds + 3, f"cut only after {took:.1f} s"
        assert await quit_tui(bystander) == 0  # the owner's session went on
    cut = audit.list_events(door.catalog.engine, action="admin_ssh.cut")
    assert [(e["target"], e["reason"]) for e in cut] == [(ACCOUNT, "account deleted")]
    with pytest.raises(asyncssh.PermissionDenied):  # its key went with it
        async with door.connect(ACCOUNT):
            pass


async def test_moving_an_account_ends_its_session_and_the_next_login_sees_the_new_tenant(
    door: Door, people: People, manager_key: asyncssh.SSHKey
) -> None:
    async with door.connect(ACCOUNT) as conn:
        process = await open_tui(conn)
        await read_until(process.stdout, b"acme-web-server", bytearray())
        started = time.monotonic()
        await asyncio.to_thread(accounts.set_account, door.catalog, people.admin, ACCOUNT, tenant="globex")
        status, stderr, took = await ends_with(process, started)
        assert status == 1 and f"account {ACCOUNT} was changed" in stderr and "log in again" in stderr
        assert took < door.front_door.account_check_seconds + 3, f"cut only after {took:.1f} s"
        # The connection logged in with the old tenant: a new session on it is refused too.
        again = await conn.run("image list --json", check=False)
        assert again.exit_status == 1 and "deleted or changed since the connection logged in" in again.stderr
        assert again.stdout == ""
    async with door.connect(ACCOUNT) as fresh:  # a new login carries the new standing
        listing = await fresh.run("image list", check=False)
        assert listing.exit_status == 0 and "globex-db-server" in listing.stdout and "acme-web" not in listing.stdout


async def test_a_perm_change_ends_the_open_tui(door: Door, people: People, manager_key: asyncssh.SSHKey) -> None:
    """The TUI holds the rights it started with (a manager's delete key): it must not outlive them."""
    async with door.connect(ACCOUNT) as conn:
        process = await open_tui(conn)
        await read_until(process.stdout, b"acme-web-server", bytearray())
        started = time.monotonic()
        await asyncio.to_thread(accounts.set_account, door.catalog, people.admin, ACCOUNT, perm="view")
        status, stderr, took = await ends_with(process, started)
        assert status == 1 and f"session closed: account {ACCOUNT} was changed" in stderr
        assert took < door.front_door.account_check_seconds + 3, f"cut only after {took:.1f} s"
    assert not door.front_door.children and not door.front_door.watched  # nothing left behind
