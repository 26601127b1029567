"""SFTP READ lengths are capped and a connection's unsent answers are bounded (checklist T14).

A raw SFTP v3 client, written here over an asyncssh session channel, asks what no stock client asks:
READs of 64 MiB and of 0xFFFFFFFF bytes, and hundreds of them pipelined while it reads no answer,
either by keeping its SSH window shut or, through a relay that stops forwarding, by not reading its
socket at all with a window of 2 GiB open. Meanwhile the resident memory of the real `imagehub
serve` subprocess is watched in /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest

from gateway.sftp import MAX_READ, MAX_REQUEST, MAX_SESSIONS
from tests.gateway.conftest import Gateway, Link
from tests.gateway.test_refusals import sftp_connect

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ = 1, 2, 3, 4, 5
FXP_STATUS, FXP_HANDLE, FXP_DATA = 101, 102, 103
FXF_READ = 0x1
FX_EOF = 1
HUGE = 0xFFFFFFFF
MIB = 1024 * 1024
# How much the gateway may grow while a client misbehaves; without the bounds, the pipelined READs
# below make it grow by hundreds of MiB (issue 12: one 64 MiB READ grew it by about 320 MB).
RSS_GROWTH_LIMIT = 32 * MIB
PIPELINED = 800  # READs sent at once: 200 MiB of answers at 256 KiB each


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class RawSFTP(asyncssh.SSHClientSession[bytes]):
    """A minimal SFTP v3 client: sends the packets it is told to and files each answer by request id.

    DATA answers are kept as (length, SHA-256) unless `keep_data`, so hundreds of MiB can pass.
    """

    def __init__(self) -> None:
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.buf = bytearray()
        self.version: int | None = None
        self.answers: dict[int, tuple[int, bytes | tuple[int, str]]] = {}
        self.bytes_received = 0
        self.keep_data = True
        self._changed = asyncio.Event()
        self.closed = False

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._changed.set()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_received += len(data)
        self.buf += data
        start = 0
        while len(self.buf) - start >= 4:
            (length,) = struct.unpack_from(">I", self.buf, start)
            if len(self.buf) - start - 4 < length:
                break
            packet = memoryview(self.buf)[start + 4 : start + 4 + length]
            self._file(packet[0], packet[1:])
            packet.release()
            start += 4 + length
        del self.buf[:start]
        self._changed.set()

    def _file(self, kind: int, body: memoryview) -> None:
        if kind == FXP_VERSION:
            (self.version,) = struct.unpack_from(">I", body)
            return
        (request_id,) = struct.unpack_from(">I", body)
        if kind == FXP_DATA:
            (length,) = struct.unpack_from(">I", body, 4)
            data = bytes(body[8 : 8 + length])
            self.answers[request_id] = (kind, data if self.keep_data else (length, hashlib.sha256(data).hexdigest()))
        else:
            self.answers[request_id] = (kind, bytes(body[4:]))

    def send(self, kind: int, *fields: bytes) -> None:
        assert self.chan is not None
        payload = bytes([kind]) + b"".join(fields)
        self.chan.write(struct.pack(">I", len(payload)) + payload)

    async def until(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                assert not self.closed, "the server closed the channel"
                self._changed.clear()
                await self._changed.wait()

    async def answer(self, request_id: int) -> tuple[int, bytes | tuple[int, str]]:
        await self.until(lambda: request_id in self.answers)
        return self.answers.pop(request_id)

    async def open(self, filename: str) -> bytes:
        self.send(FXP_INIT, struct.pack(">I", 3))
        await self.until(lambda: self.version is not None)
        self.send(FXP_OPEN, struct.pack(">I", 1), _string(filename.encode()), struct.pack(">II", FXF_READ, 0))
        kind, body = await self.answer(1)
        assert kind == FXP_HANDLE and isinstance(body, bytes), (kind, body)
        (length,) = struct.unpack_from(">I", body)
        return body[4 : 4 + length]

    def read(self, request_id: int, handle: bytes, offset: int, length: int) -> None:
        self.send(FXP_READ, struct.pack(">I", request_id), _string(handle), struct.pack(">QI", offset, length))


@contextlib.asynccontextmanager
async def raw_sftp(
    gw: Gateway, link: Link, port: int | None = None, window: int = 2 * MIB
) -> AsyncIterator[tuple[RawSFTP, bytes]]:
    conn = await asyncssh.connect(
        gw.host, port or gw.sftp, username=link.token, known_hosts=None, client_keys=None, agent_path=None
    )
    try:
        chan, session = await conn.create_session(RawSFTP, subsystem="sftp", encoding=None, window=window)
        handle = await session.open(link.filename)
        yield session, handle
        chan.close()
    finally:
        conn.close()
        await conn.wait_closed()


class StallingRelay:
    """A TCP relay to the gateway whose server-to-client direction can be stopped: the client then
    reads nothing from its socket, whatever SSH window it has opened."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self.writers += [client_w, server_w]
        for task in (self._pump(client_r, server_w, None), self._pump(server_r, client_w, self.flowing)):
            self.tasks.add(asyncio.create_task(task))

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                if gate is not None:
                    await gate.wait()
                data = await reader.read(64 * 1024)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def rss(gw: Gateway) -> int:
    return status_kib(gw.proc.pid, "VmRSS") * 1024


def reset_peak(gw: Gateway) -> None:
    """Start VmHWM (the peak resident size) again from the current size."""
    Path(f"/proc/{gw.proc.pid}/clear_refs").write_text("5")


def peak(gw: Gateway) -> int:
    return status_kib(gw.proc.pid, "VmHWM") * 1024


async def watch_growth(gw: Gateway, base: int, seconds: float) -> int:
    """The most `serve` grew above `base` over `seconds`; fails as soon as it passes the limit.

    No event says the server stopped serving: the gateway either holds the READs (and stays small) or
    answers them all (and grows far past the limit within the first second), so a bounded watch tells.
    """
    grown = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        grown = max(grown, rss(gw) - base)
        assert grown < RSS_GROWTH_LIMIT, f"serve grew by {grown / MIB:.0f} MiB while the client read nothing"
        await asyncio.sleep(0.02)
    return grown


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=3 * MIB + 12345))


async def test_t14_sftp_read_capped_at_256k(gw: Gateway, link: Link) -> None:
    expected = link.path.read_bytes()
    async with raw_sftp(gw, link) as (sftp, handle):
        asks = [(10, 0, 64 * MIB), (11, 777, HUGE), (12, len(expected) - 1000, HUGE), (13, 5, 1000)]
        for request_id, offset, length in asks:
            sftp.read(request_id, handle, offset, length)
        answers = [await sftp.answer(request_id) for request_id, _, _ in asks]
        assert [kind for kind, _ in answers] == [FXP_DATA] * 4
        # Short reads (legal in SFTP) of 256 KiB, the rest of the file near its end, and a small one whole.
        assert [body for _, body in answers] == [
            expected[:MAX_READ],
            expected[777 : 777 + MAX_READ],
            expected[-1000:],
            expected[5:1005],
        ]
        assert MAX_READ == 256 * 1024


async def test_t14_sftp_read_past_any_end_is_eof(gw: Gateway, link: Link) -> None:
    async with raw_sftp(gw, link) as (sftp, handle):
        sftp.read(20, handle, link.size, HUGE)
        sftp.read(21, handle, 2**64 - 1, HUGE)
        for request_id in (20, 21):
            kind, body = await sftp.answer(request_id)
            assert kind == FXP_STATUS and isinstance(body, bytes)
            assert struct.unpack_from(">I", body)[0] == FX_EOF, body


async def assert_pipelined_reads_bounded(gw: Gateway, link: Link, sftp: RawSFTP, handle: bytes, stall: object) -> None:
    """Sends PIPELINED READs of 0xFFFFFFFF bytes while reading no answer; `serve` must stay small, and
    every answer must come, right, once the client reads again."""
    expected = link.path.read_bytes()
    sftp.keep_data = False
    base = rss(gw)
    reset_peak(gw)
    offsets = [(i * 4099) % (len(expected) - MAX_READ) for i in range(PIPELINED)]
    for i, offset in enumerate(offsets):
        sftp.read(100 + i, handle, offset, HUGE)
    grown = await watch_growth(gw, base, 2.0)
    assert len(sftp.answers) < PIPELINED // 4, "the answers were not held back"

    await stall()  # type: ignore[operator]
    await sftp.until(lambda: len(sftp.answers) == PIPELINED, timeout=120)
    for i, offset in enumerate(offsets):
        chunk = expected[offset : offset + MAX_READ]
        assert sftp.answers[100 + i] == (FXP_DATA, (MAX_READ, hashlib.sha256(chunk).hexdigest())), i
    assert peak(gw) - base < RSS_GROWTH_LIMIT, f"peak {(peak(gw) - base) / MIB:.0f} MiB, watched {grown / MIB:.0f}"


async def test_t14_pipelined_huge_reads_with_the_window_shut_keep_serve_small(gw: Gateway, link: Link) -> None:
    """The client's SSH window runs out: answers would pile up in the server's channel buffer."""
    async with raw_sftp(gw, link) as (sftp, handle):
        assert sftp.chan is not None
        sftp.chan.pause_reading()  # asyncssh then adjusts no window

        async def resume() -> None:
            assert sftp.chan is not None
            sftp.chan.resume_reading()

        await assert_pipelined_reads_bounded(gw, link, sftp, handle, resume)


async def test_t14_pipelined_huge_reads_to_a_client_not_reading_its_socket_keep_serve_small(
    gw: Gateway, link: Link
) -> None:
    """The client opens a 2 GiB window, then reads nothing: answers would pile up in the transport."""
    relay = StallingRelay((gw.host, gw.sftp))
    port = await relay.start()
    try:
        async with raw_sftp(gw, link, port=port, window=2**31) as (sftp, handle):
            relay.flowing.clear()

            async def resume() -> None:
                relay.flowing.set()

            await assert_pipelined_reads_bounded(gw, link, sftp, handle, resume)
    finally:
        await relay.close()


def serve_fd_targets(gw: Gateway) -> list[str]:
    targets = []
    for fd in Path(f"/proc/{gw.proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            targets.append(os.readlink(fd))
    return targets


async def test_t14_stalled_client_leaving_leaves_nothing_waiting(gw: Gateway, link: Link) -> None:
    """A connection closed while its READs wait for room frees them: the file and the socket are
    closed, and the next download is whole."""
    sockets_before = sum(t.startswith("socket:") for t in serve_fd_targets(gw))
    async with raw_sftp(gw, link) as (sftp, handle):
        assert sftp.chan is not None
        sftp.chan.pause_reading()
        for i in range(64):  # 16 MiB of answers: far more than the window and the queue take
            sftp.read(200 + i, handle, 0, HUGE)
        await watch_growth(gw, rss(gw), 0.5)
        assert str(link.path) in serve_fd_targets(gw)
    deadline = time.monotonic() + 10
    while (
        str(link.path) in (targets := serve_fd_targets(gw))
        or sum(t.startswith("socket:") for t in targets) > sockets_before
    ):
        assert time.monotonic() < deadline, f"serve still holds {targets}"
        await asyncio.sleep(0.02)
    async with (
        await sftp_connect(gw, link.token) as conn,
        conn.start_sftp_client() as client,
        client.open(link.filename, "rb") as remote,
    ):
        assert await remote.read() == link.path.read_bytes()


async def test_t14_a_connection_opens_at_most_4_sessions(gw: Gateway, link: Link) -> None:
    assert MAX_SESSIONS == 4
    async with await sftp_connect(gw, link.token) as conn:
        clients = [await conn.start_sftp_client() for _ in range(MAX_SESSIONS)]
        with pytest.raises(asyncssh.ChannelOpenError, match="Too many sessions"):
            await conn.start_sftp_client()
        # The refusal leaves the connection and its sessions working, and a session ended makes room.
        for client in clients:
            assert sorted(await client.listdir("/")) == sorted([".", "..", link.filename, link.filename + ".sha256"])
        clients[0].exit()
        await clients[0].wait_closed()
        clients[0] = await conn.start_sftp_client()
        assert await clients[0].exists(link.filename)
        for client in clients:
            client.exit()
            await client.wait_closed()


async def test_t14_requests_pushed_on_many_channels_keep_serve_small(gw: Gateway, link: Link) -> None:
    """Each session may be receiving a request; on 50 channels of one connection, each with a 4 MiB
    request, that made serve grow by 200 MiB. Now requests stop at 257 KiB and sessions at 4."""
    base = rss(gw)
    async with await sftp_connect(gw, link.token) as conn:
        opened = refused = 0
        for _ in range(50):
            try:
                chan, _ = await conn.create_session(asyncssh.SSHClientSession, subsystem="sftp", encoding=None)
            except asyncssh.ChannelOpenError as exc:
                assert exc.reason == "Too many sessions"
                refused += 1
                continue
            opened += 1
            chan.write(struct.pack(">I", MAX_REQUEST) + bytes(MAX_REQUEST - 1024))  # a request that never ends
        assert (opened, refused) == (MAX_SESSIONS, 50 - MAX_SESSIONS)
        await watch_growth(gw, base, 1.0)


async def test_t14_an_sftp_request_longer_than_257k_closes_its_channel(gw: Gateway, link: Link) -> None:
    base = rss(gw)
    async with await sftp_connect(gw, link.token) as conn:
        chan, _ = await conn.create_session(asyncssh.SSHClientSession, subsystem="sftp", encoding=None)
        chan.write(struct.pack(">I", 4 * MIB) + bytes(4 * MIB))
        async with asyncio.timeout(30):
            await chan.wait_closed()
    assert rss(gw) - base < RSS_GROWTH_LIMIT
    assert "SFTP request of 4194304 bytes: channel closed" in gw.log_text()
