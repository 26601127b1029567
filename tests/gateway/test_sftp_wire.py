"""SFTP's send path (gateway/sftp.py `_Wire`): data packets sealed into one buffer per flush with
AES-GCM or AES-CTR and an encrypt-then-MAC, asyncssh's own path for everything else; every
combination a client can negotiate downloads whole, across key re-exchanges too."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from gateway.sftp import ENCRYPTION_ALGS, _Outflow, _Wire
from tests.gateway.conftest import Gateway, Link, sha256_file
from tests.gateway.test_clients import env_for, sftp_base
from tests.gateway.test_refusals import sftp_connect

# Past several 256 KiB reads and the client's 2 MiB window, and not a multiple of a packet.
SIZE = 6 * 1024 * 1024 + 12_345

# (cipher, MAC): which path seals the server's packets.
NEGOTIABLE = [
    ("aes128-gcm@openssh.com", None),  # _Wire, GCM
    ("aes256-gcm@openssh.com", None),
    ("aes128-ctr", "umac-64-etm@openssh.com"),  # _Wire, CTR with UMAC (OpenSSH's default choice)
    ("aes256-ctr", "umac-128-etm@openssh.com"),
    ("aes192-ctr", "hmac-sha2-256-etm@openssh.com"),  # _Wire, CTR with asyncssh's HMAC
    ("aes128-ctr", "hmac-sha2-512"),  # MAC before encryption: asyncssh's own path
]


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=SIZE))


@pytest.fixture(autouse=True)
def _drop_downloads(tmp_path: Path) -> Iterator[None]:
    yield
    for path in tmp_path.iterdir():
        if path.is_file():
            path.unlink()


@pytest.mark.parametrize(("cipher", "mac"), NEGOTIABLE)
async def test_download_is_whole_with_each_cipher_and_mac(
    gw: Gateway, link: Link, cipher: str, mac: str | None
) -> None:
    options: dict[str, object] = {"encryption_algs": [cipher]}
    if mac is not None:
        options["mac_algs"] = [mac]
    async with (
        await sftp_connect(gw, link.token, **options) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(link.filename, "rb") as handle,
    ):
        assert conn.get_extra_info("recv_cipher") == cipher
        if mac is not None:
            assert conn.get_extra_info("recv_mac") == mac
        # Reads of every size the client asks, at odd offsets: each answer is cut into packets.
        data = await handle.read(1)
        data += await handle.read(100_000)
        data += await handle.read()
    assert hashlib.sha256(data).hexdigest() == link.sha256


@pytest.mark.parametrize(
    ("cipher", "mac"), [("aes128-gcm@openssh.com", None), ("aes128-ctr", "umac-64-etm@openssh.com")]
)
def test_openssh_sftp_rekeying_every_megabyte_gets_the_whole_file(
    gw: Gateway, link: Link, tmp_path: Path, cipher: str, mac: str | None
) -> None:
    """OpenSSH's client starts a key exchange after each MiB received: the server's packets in flight
    then wait for the new keys (asyncssh defers them), and sealing resumes with the new ones."""
    out = tmp_path / link.filename
    batch = tmp_path / "batch"
    batch.write_text(f"get {link.filename} {out.name}\n")
    options = ["-o", "StrictHostKeyChecking=accept-new", "-o", "RekeyLimit=1M", "-c", cipher, "-v"]
    if mac is not None:
        options += ["-o", f"MACs={mac}"]
    done = subprocess.run(
        [*sftp_base(gw, tmp_path), *options, "-b", str(batch), f"{link.token}@{gw.host}"],
        cwd=tmp_path,
        env=env_for(gw),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sha256_file(out) == link.sha256
    assert f"cipher: {cipher}" in done.stderr
    # The first exchange, then re-exchanges while the file came (OpenSSH starts one once past the
    # limit, and counts again from the new keys: 3 or 4 for these 6 MiB).
    assert done.stderr.count("SSH2_MSG_NEWKEYS received") >= 3


class _OutflowServer(asyncssh.SSHServer):
    """The gateway's send path (_Outflow and its _Wire) on a plain asyncssh server, no login."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        _Outflow(conn)

    def begin_auth(self, username: str) -> bool:
        return False


@pytest.mark.parametrize(
    ("cipher", "mac"),
    [("aes128-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com"), ("aes128-ctr", "umac-64-etm@openssh.com")],
)
async def test_data_packets_are_sealed_by_the_wire_not_asyncssh(
    monkeypatch: pytest.MonkeyPatch, cipher: str, mac: str
) -> None:
    """Counts what `_Wire._seal` sealed: if an asyncssh release changed what it relies on, downloads
    would still work (through asyncssh) but this fails."""
    sealed: list[bool] = []
    seal = _Wire._seal

    def counted(self: _Wire, head: bytes, packets: list[tuple[int, tuple[object, ...]]]) -> bool:
        sealed.append(seal(self, head, packets))
        return sealed[-1]

    monkeypatch.setattr(_Wire, "_seal", counted)
    data = os.urandom(3 * 1024 * 1024 + 17)  # past the client's 2 MiB window: adjusts resume the flushes

    async def send_data(process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.stdout.write(data)
        process.exit(0)

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=_OutflowServer,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=send_data,
        encoding=None,
        encryption_algs=ENCRYPTION_ALGS,
        line_editor=False,
    )
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            server.get_port(),
            username="x",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            encryption_algs=[cipher],
            mac_algs=[mac],
        ) as conn:
            result = await conn.run(encoding=None)
    finally:
        server.close()
        await server.wait_closed()
    assert result.stdout == data
    assert sealed and all(sealed), sealed
