"""The serve loop: asyncio's selector loop with its `sendfile` copies made in worker threads.

asyncio's native `loop.sendfile` calls `os.sendfile` on the event loop's thread, so every byte
the HTTP server sends is copied by that one thread: with many fast clients it runs out of its core
while nginx's workers use them all. Here each `os.sendfile` call (as much as the socket takes,
then EAGAIN) runs in a small thread pool, which copies with the GIL released; waiting for the
socket to drain stays on the loop (a writer callback), so a slow client holds no thread.

The socket is used through a duplicate of its descriptor, so that a connection closed by the
loop meanwhile never lets a thread write into a recycled descriptor number; a cancelled send
waits for the call in flight before it returns. Everything else is asyncio's own code.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CALL_MAX = 16 << 20  # bytes one sendfile call may send; the socket buffer usually stops it first


def _send_some(out_fd: int, in_fd: int, offset: int, count: int) -> int | None:
    """One non-blocking sendfile call: bytes sent (0 at the end of the file), or None on EAGAIN."""
    try:
        return os.sendfile(out_fd, in_fd, offset, min(count, CALL_MAX))
    except (BlockingIOError, InterruptedError):
        return None


class SendfileLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `sock_sendfile` copies in threads (see the module docstring)."""

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self._sendfile_pool = ThreadPoolExecutor(
            max_workers=threads or max(2, os.cpu_count() or 2), thread_name_prefix="sendfile"
        )

    def close(self) -> None:
        super().close()
        self._sendfile_pool.shutdown(wait=True)

    async def _writable(self, fd: int) -> None:
        ready = self.create_future()
        self.add_writer(fd, lambda: None if ready.done() else ready.set_result(None))
        try:
            await ready
        finally:
            self.remove_writer(fd)

    async def _sock_sendfile_native(self, sock: socket.socket, file: Any, offset: int, count: int | None) -> int:
        try:
            in_fd = file.fileno()
            size = os.fstat(in_fd).st_size
        except (AttributeError, io.UnsupportedOperation, OSError) as exc:
            raise asyncio.SendfileNotAvailableError("not a regular file") from exc
        remaining = count if count else max(0, size - offset)
        out_fd = os.dup(sock.fileno())
        sent_total = 0
        try:
            while remaining > 0:
                call = self.run_in_executor(self._sendfile_pool, _send_some, out_fd, in_fd, offset, remaining)
                try:
                    sent = await asyncio.shield(call)
                except asyncio.CancelledError:
                    await asyncio.wait({call})  # the thread must be done with the socket before we return
                    raise
                if sent is None:
                    await self._writable(out_fd)
                    continue
                if sent == 0:
                    break  # the file ended early
                offset += sent
                remaining -= sent
                sent_total += sent
        finally:
            os.close(out_fd)
            if sent_total:
                os.lseek(in_fd, offset, os.SEEK_SET)  # as asyncio does: the file position follows
        return sent_total
