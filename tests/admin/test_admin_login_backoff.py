"""Failed logins on the admin SSH door (gateway/throttle.py): a connection that ends unauthenticated
is one failure of its address; past the threshold the first unknown key of each new connection is
answered late, while a known key still gets in at once; failures are counted in the metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from core.accounts import keys
from core.catalog.catalog import Catalog
from gateway.admin_ssh import listen
from gateway.throttle import LoginThrottle
from gateway.transfers import Metrics
from tests.conftest import People

AFTER = 1
CAP = 1.5
FAST = 0.5


@dataclass
class Door:
    port: int
    throttle: LoginThrottle
    metrics: Metrics
    owner: asyncssh.SSHKey
    strangers: list[asyncssh.SSHKey]

    def connect(self, *client_keys: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
        return asyncssh.connect(
            "127.0.0.1", self.port, username="admin", client_keys=list(client_keys), known_hosts=None,
            agent_path=None,
        )  # fmt: skip

    def failed(self) -> float:
        return self.metrics.failed_logins.labels("admin_ssh")._value.get()


@pytest.fixture
async def door(catalog: Catalog, people: People, tmp_path: Path) -> AsyncIterator[Door]:
    owner = asyncssh.generate_private_key("ssh-ed25519", comment="acme-owner")
    owner.write_public_key(str(tmp_path / "owner.pub"))
    keys.add_key(catalog, people.admin, "acme-owner", tmp_path / "owner.pub")
    strangers = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(3)]
    metrics = Metrics(catalog)
    throttle = LoginThrottle(AFTER, CAP, 600.0, counter=metrics.failed_logins)
    acceptor, front_door = await listen(catalog, "127.0.0.1", 0, throttle)
    yield Door(acceptor.get_port(), throttle, metrics, owner, strangers)
    acceptor.close()
    await front_door.close()
    await acceptor.wait_closed()


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def refused(door: Door, *client_keys: asyncssh.SSHKey) -> float:
    """Seconds a refused login took; returns once the door has counted the failure."""
    before = door.throttle.failures("127.0.0.1")
    started = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        async with door.connect(*client_keys):
            pass
    took = time.monotonic() - started
    await until(lambda: door.throttle.failures("127.0.0.1") == before + 1, "the failure was not counted")
    return took


async def test_unknown_keys_are_answered_later_and_a_known_key_gets_in_at_once(door: Door) -> None:
    fast = await refused(door, door.strangers[0])
    assert fast < FAST
    assert await refused(door, door.strangers[0]) - fast >= 0.9  # the 2nd failed connection: 1 s
    assert await refused(door, door.strangers[0]) - fast >= CAP - 0.1  # then the cap
    started = time.monotonic()
    async with door.connect(door.owner):
        assert time.monotonic() - started < fast + FAST
    # Only the first unknown key of a connection waits: three of them cost one delay, not three.
    took = await refused(door, *door.strangers)
    assert CAP - 0.1 <= took < 2 * CAP
    assert door.failed() == 4
    assert door.throttle.failures("127.0.0.1") == 4  # the success did not clear the count


async def test_keys_offered_before_the_right_one_are_not_a_failed_login(door: Door) -> None:
    for _ in range(AFTER + 2):
        async with door.connect(*door.strangers, door.owner):
            pass
    await asyncio.sleep(0)
    assert door.throttle.failures("127.0.0.1") == 0
    assert door.failed() == 0
