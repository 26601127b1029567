"""FTP uploads: what an upload session sees and writes through (gateway/ftp.py drives the session).

An upload token's session sees a root holding one writable file: whatever plain name the client
uses is the upload, its size the bytes received so far. Its data goes into an `UploadFile`, in
`BATCH` bytes at a time, through `Receiver.write` (the one writer of core.importer.receiver: offset
rule, size rule). A plain (not TLS) data connection is taken off the session's loop and read by a
thread of its own straight into one buffer (`UploadFile.receive_from`): the loop's per-read
dispatch and copies cost more than the bytes' own copies. A TLS one is read by the loop, as
pyftpdlib does, and batched. A write the Receiver refuses aborts the data connection with the
Receiver's message: 552 for bytes beyond the upload's size, 550 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pyftpdlib.filesystems import AbstractedFS, FilesystemError

from core.importer.receiver import Receiver, UploadRefused

log = logging.getLogger("imagehub.gateway.ftp")

BATCH = 1 << 20  # bytes handed to Receiver.write at once
UPLOAD_ROOT = "/upload"  # the virtual root of an upload session's file system: nothing on disk
UPLOAD_PERMS = "elaw"  # shown in MLSD/MLST facts: list, append, write
DEFAULT_NAME = "upload"  # the name listings show before the client names the file
NOT_HERE = "550 This upload link takes one file, written with STOR or APPE: nothing else can change here."
NOT_READABLE = "550 This is an upload link: it receives one file and serves none."


class UploadFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib's classes are Any to mypy
    """An upload session's root: one file, whatever plain name the client gives it; no directories.
    Nothing here touches the disk: sizes are the upload's offset (`offset()`)."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__(UPLOAD_ROOT, cmd_channel)
        self.offset: Callable[[], int] = cmd_channel.upload_offset
        self.shown = DEFAULT_NAME  # the name the client last used for the upload

    def name_of(self, path: str) -> str | None:
        """The plain name a path stands for; "" for the root; None for anything else (directories)."""
        path = os.path.normpath(path)
        root = os.path.normpath(self.root)
        if path == root:
            return ""
        parent, name = os.path.split(path)
        return name if parent == root and name else None

    def _require(self, path: str) -> str:
        name = self.name_of(path)
        if name is None:
            raise FilesystemError("No such file or directory")
        return name

    def validpath(self, path: str) -> bool:
        return self.name_of(path) is not None

    def realpath(self, path: str) -> str:
        return path

    def open(self, filename: str, mode: str) -> Any:
        raise FilesystemError("Upload only")

    def mkstemp(self, *args: Any, **kwargs: Any) -> Any:
        raise FilesystemError("Upload only")

    def chdir(self, path: str) -> None:
        if self.name_of(path) != "":
            raise FilesystemError("No such directory")
        self.cwd = "/"

    def mkdir(self, path: str) -> None:
        raise FilesystemError("Upload only")

    rmdir = remove = mkdir

    def rename(self, src: str, dst: str) -> None:
        raise FilesystemError("Upload only")

    def chmod(self, path: str, mode: Any) -> None:
        raise FilesystemError("Upload only")

    def utime(self, path: str, timeval: Any) -> None:
        raise FilesystemError("Upload only")

    def listdir(self, path: str) -> list[str]:
        if self._require(path) != "":
            raise FilesystemError("Not a directory")
        return [self.shown]

    listdirinfo = listdir

    def stat(self, path: str) -> os.stat_result:
        name = self._require(path)
        now = int(time.time())
        if not name:
            return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, now, now, now))
        return os.stat_result((stat.S_IFREG | 0o644, 1, 0, 1, 0, 0, self.offset(), now, now, now))

    lstat = stat

    def readlink(self, path: str) -> str:
        raise FilesystemError("Not a symbolic link")

    def isfile(self, path: str) -> bool:
        return bool(self.name_of(path))

    def islink(self, path: str) -> bool:
        return False

    def isdir(self, path: str) -> bool:
        return self.name_of(path) == ""

    def getsize(self, path: str) -> int:
        if not self._require(path):
            raise FilesystemError("Is a directory")
        return self.offset()

    def getmtime(self, path: str) -> float:
        self._require(path)
        return time.time()

    def lexists(self, path: str) -> bool:
        return self.name_of(path) is not None

    def get_user_by_uid(self, uid: int) -> str:
        return "imagehub"

    def get_group_by_gid(self, gid: int) -> str:
        return "imagehub"


class UploadFile:
    """The file object pyftpdlib's data channel writes a STOR/APPE into: the Receiver, in batches
    that a thread of this file hashes and writes while the loop receives the next (at most
    `PENDING` batches wait; then the loop waits too)."""

    PENDING = 2

    def __init__(self, receiver: Receiver, name: str) -> None:
        self.receiver = receiver
        self.name = name
        self.closed = False
        self.refused: UploadRefused | None = None
        self.passed_size = False  # the refusal was for bytes beyond the upload's size
        self._buffer = bytearray()
        self._next = receiver.offset  # where the next byte goes: on disk, queued, buffered
        self._queue: queue.Queue[tuple[int, bytearray] | None] = queue.Queue(self.PENDING)
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._begin = receiver.mark()  # a transfer that passes the upload's size is dropped whole

    @property
    def complete(self) -> bool:
        return self.receiver.complete

    def write(self, data: bytes) -> int:
        self._raise_failure()
        receiver = self.receiver
        if self._next + len(data) > receiver.size:
            self.flush()
            self.passed_size = True
            self._write(self.receiver.offset, bytearray(data))  # refused by the Receiver, with its message
        self._buffer += data
        self._next += len(data)
        if self._next == receiver.size:
            self.flush()  # the last byte: answered once it is in
        elif len(self._buffer) >= BATCH:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        """Queue the buffered bytes for this file's writing thread."""
        if not self._buffer:
            return
        data, self._buffer = self._buffer, bytearray()
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="ftp-upload", daemon=True)
            self._thread.start()
        self._queue.put((self._next - len(data), data))

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._failure is None:
                    self._write(*item)
            except BaseException as exc:  # raised in the loop's thread at its next write or flush
                self._failure = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._buffer = bytearray()
            self._next = self.receiver.offset
            raise failure

    def flush(self) -> None:
        """Every byte written so far is on disk (or the refusal is raised)."""
        self._hand_over()
        self._queue.join()
        self._raise_failure()

    def receive_from(self, sock: socket.socket, received: Callable[[int], None]) -> None:
        """In a thread of its own: read a plain data connection until it ends (EOF, a reset, or its
        `shutdown` by the loop) into one buffer of `BATCH` bytes, writing what each read brought
        through the Receiver (reading until the buffer is full instead starves TCP's window: half
        the speed); `received` counts every read. Raises the Receiver's refusal, or the disk's error."""
        sock.setblocking(True)  # the loop no longer watches it; its `shutdown` ends a blocked read
        view = memoryview(bytearray(BATCH))
        while True:
            try:
                n = sock.recv_into(view)
            except OSError:  # a reset: what arrived before it is a valid start, as at EOF
                return
            if not n:
                return
            received(n)
            self.write_now(view[:n])

    def write_now(self, data: memoryview) -> None:
        """Write `data` at the end of what arrived, from the calling thread (the data connection's)."""
        if self._next + len(data) > self.receiver.size:
            self.passed_size = True
        self._write(self._next, data)
        self._next += len(data)

    def _write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        try:
            self.receiver.write(offset, data)
        except UploadRefused as exc:
            self.refused = exc
            raise

    def close(self) -> None:
        """Let go of the upload (the data channel flushed it already; anything left is written)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.refused is None:
                with contextlib.suppress(UploadRefused):
                    self.flush()
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            if self.passed_size:  # it is another (longer) file: none of it is a valid start
                with contextlib.suppress(OSError):
                    self.receiver.rollback(self._begin)
            self.receiver.close()


class UploadDTPMixin:
    """Put before pyftpdlib's DTPHandler (or TLS_DTPHandler): a plain data connection receiving an
    upload is read by a thread of its own (`UploadFile.receive_from`), off the loop, which hears of
    its end through the session's `loop.call_soon`; any data channel writing into an UploadFile
    flushes it before it answers; a write the Receiver refuses aborts the transfer with the
    Receiver's message instead of pyftpdlib's "426 Internal error"."""

    _closed: bool
    _resp: tuple[str, Any]
    _fileno: int
    file_obj: Any
    transfer_finished: bool
    tot_bytes_received: int
    socket: Any
    ioloop: Any
    cmd_channel: Any
    _reader: threading.Thread | None = None

    def enable_receiving(self, type: str, cmd: str) -> None:
        super().enable_receiving(type, cmd)  # type: ignore[misc]
        upload = self.file_obj
        if isinstance(upload, UploadFile) and type == "i" and isinstance(self.socket, socket.socket):
            self.ioloop.unregister(self._fileno)  # read by the thread below, not by the loop
            self._reader = threading.Thread(target=self._read_upload, args=(upload,), name="ftp-upload", daemon=True)
            self._reader.start()

    def _count(self, n: int) -> None:
        self.tot_bytes_received += n  # the loop's data timeout and activity watch it

    def _read_upload(self, upload: UploadFile) -> None:
        outcome: BaseException | None = None
        try:
            upload.receive_from(self.socket, self._count)
        except BaseException as exc:
            outcome = exc
        self.cmd_channel.loop.call_soon(lambda: self._upload_read(outcome))  # a closed loop closed us too

    def _upload_read(self, outcome: BaseException | None) -> None:
        """In the loop: the reading thread ended (the connection ended, or a write failed)."""
        if self._closed:
            return
        if outcome is None:
            self.handle_close()  # type: ignore[attr-defined]  # the client's EOF: 226 (or what close makes of it)
        elif isinstance(outcome, UploadRefused):
            self._refuse(outcome)
        else:
            if not isinstance(outcome, OSError):
                log.error("an FTP upload's reading thread failed", exc_info=outcome)
            self._resp = ("451 The upload could not be written here; try again later.", log.warning)
            self.transfer_finished = False
            self.close()

    def _refuse(self, error: UploadRefused) -> None:
        upload = self.file_obj
        code = "552" if isinstance(upload, UploadFile) and upload.passed_size else "550"
        self._resp = (f"{code} {error}; transfer aborted.", log.info)
        self.transfer_finished = False
        self.close()

    def handle_error(self) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, UploadRefused) and isinstance(self.file_obj, UploadFile):
            self._refuse(error)
            return
        super().handle_error()  # type: ignore[misc]

    def _stop_reader(self) -> None:
        """Before the channel closes: its reading thread (if any) has ended, what it read written."""
        reader = self._reader
        if reader is None or reader is threading.current_thread():
            return
        if reader.is_alive():
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RD)  # its blocked read returns: the end
            reader.join()

    def close(self) -> None:
        self._stop_reader()
        upload = self.file_obj
        if not self._closed and isinstance(upload, UploadFile) and not upload.closed:
            try:
                upload.flush()
            except UploadRefused as exc:
                self.transfer_finished = False
                if self._resp:
                    self._resp = (f"550 {exc}; transfer aborted.", log.info)
            except OSError:
                log.exception("writing an FTP upload failed")
                self.transfer_finished = False
                if self._resp:
                    self._resp = ("451 The upload could not be written here; try again later.", log.warning)
            else:
                if upload.complete and self._resp and self._resp[0].startswith("226"):
                    size = upload.receiver.size
                    self._resp = (f"226 Upload complete: all {size} bytes arrived; the import starts now.", log.debug)
        super().close()  # type: ignore[misc]
