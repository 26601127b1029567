"""The serve loop's sendfile: bytes whole at any offset, the copies made in the pool's threads,
and a cancelled send (a cut) that stops writing and leaves no descriptor behind."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
import threading
from pathlib import Path

from gateway.sendfile import SendfileLoop

MIB = 1 << 20


def data_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sends_the_range_whole_from_the_pool_threads(tmp_path: Path) -> None:
    path, data = data_file(tmp_path, 24 * MIB + 123)
    loop = SendfileLoop(threads=2)
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    callers: set[str] = set()
    original = os.sendfile

    def spy(*args: int) -> int:
        callers.add(threading.current_thread().name)
        return original(*args)

    received = bytearray()

    def drain() -> None:
        while chunk := receiver.recv(MIB):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        os.sendfile = spy  # type: ignore[assignment]
        with open(path, "rb") as handle:
            sent = loop.run_until_complete(loop.sock_sendfile(sender, handle, 1000, 20 * MIB))
            assert handle.tell() == 1000 + 20 * MIB
    finally:
        os.sendfile = original  # type: ignore[assignment]
        sender.close()
        reader.join(10)
        receiver.close()
        loop.close()
    assert sent == 20 * MIB
    assert bytes(received) == data[1000 : 1000 + 20 * MIB]
    assert callers and all(name.startswith("sendfile") for name in callers)


def test_a_cancelled_send_stops_writing_and_closes_its_descriptor(tmp_path: Path) -> None:
    path, _data = data_file(tmp_path, 64 * MIB)
    loop = SendfileLoop(threads=2)
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    baseline = open_fds()

    async def send_then_cancel() -> None:
        with open(path, "rb") as handle:
            task = asyncio.ensure_future(loop.sock_sendfile(sender, handle, 0, 64 * MIB))
            # Nobody reads: the socket fills, the send waits on the loop, holding no thread.
            while not _pending(receiver):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert task.done() is False
            task.cancel()
            await asyncio.wait({task})
            assert task.cancelled()

    try:
        loop.run_until_complete(send_then_cancel())
        assert open_fds() == baseline  # the file closed, and the socket's duplicate too
        queued = _pending(receiver)
        receiver.setblocking(False)
        drained = 0
        try:
            while chunk := receiver.recv(MIB):
                drained += len(chunk)
        except BlockingIOError:
            pass
        assert drained >= queued > 0
        loop.run_until_complete(asyncio.sleep(0.2))
        try:
            extra = receiver.recv(MIB)
        except BlockingIOError:
            extra = b""
        assert extra == b""  # nothing written after the cancel
    finally:
        sender.close()
        receiver.close()
        loop.close()


def _pending(sock: socket.socket) -> int:
    """Bytes queued for reading on `sock`."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
