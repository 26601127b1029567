"""SFTP uploads (asyncssh): what an upload token opens, one writable file (core.importer.receiver).

The session sees a root `/` with no directories in it; whatever plain name the client writes to is
the upload, and `stat` of any such name answers the bytes received so far, so OpenSSH's `reput`
continues where the upload is (even at byte 0). `put` (an open with TRUNC) is taken only while no
byte has arrived: it would start over. A write must continue exactly at the upload's offset and
may not pass its size. OpenSSH pipelines its writes, and asyncssh answers a channel's requests one
after another, in order: writes that continue the upload are acknowledged at once and gathered into
about FLUSH_AT bytes, handed to the Receiver in a worker thread (it hashes and writes), and what is
gathered is handed over too on close, fsync and when the connection is lost. Reads, removes,
renames, directories, links and changes of size or owner are refused; the times and permissions
`put -p` sets are taken and ignored (the upload is bytes). OpenSSH's sftp shows only a status's code,
never its message: a refusal's message is also written to the channel's stderr, which it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import stat as stat_mod
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPFailure, SFTPName, SFTPNoSuchFile, SFTPOpUnsupported, SFTPPermissionDenied
from asyncssh.constants import EXTENDED_DATA_STDERR

from core.importer.receiver import Receiver, UploadRefused, current_offset
from core.links.links import Refused
from core.links.uploads import Receiving
from gateway.sftp_jail import JailBasics
from gateway.transfers import Conn, Registry, Transfer

log = logging.getLogger("imagehub.gateway.sftp")

FLUSH_AT = 1024 * 1024  # gathered writes handed to the Receiver at once (it hashes ~1.7 GB/s)
LISTED_NAME = "upload"  # the one entry a listing of the root shows
_CHANGING = asyncssh.FXF_TRUNC | asyncssh.FXF_EXCL  # what would start the upload over
# setstat fields `put -p` sends: accepted and ignored. Any other (size, owner) is refused.
_IGNORED = ("type", "extended")  # always present in a decoded SFTPAttrs
_HARMLESS_ATTRS = ("permissions", "atime", "atime_ns", "mtime", "mtime_ns", "ctime", "ctime_ns", "crtime", "crtime_ns")


_finishing: set[asyncio.Future[str | None]] = set()  # writers let go of after their connection was lost


class UploadSession:
    """One SSH connection of one upload link."""

    def __init__(
        self, registry: Registry, receiving: Receiving, conn: Conn, ssh: asyncssh.SSHServerConnection, token: str
    ) -> None:
        self.registry = registry
        self.receiving = receiving
        self.conn = conn
        self.ssh = ssh
        self.peer = conn.peer
        self.token = token
        self.writers: set[_Writer] = set()

    def lost(self) -> None:
        """The connection is gone: hand over what its writers gathered, and let go of the upload."""
        for writer in list(self.writers):
            task = asyncio.ensure_future(writer.finish(self, "lost"))
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)


class _Writer:
    """An open upload handle: the Receiver (held for this connection), and the acknowledged writes
    not yet handed to it. Every use of the Receiver holds `lock`: one worker thread at a time."""

    def __init__(self, receiver: Receiver, transfer: Transfer) -> None:
        self.receiver = receiver
        self.transfer = transfer
        self.gathered = bytearray()
        self.lock = asyncio.Lock()
        self.finished = False
        self.offset = receiver.offset  # where the next write must start: on disk, being written, gathered
        self._inflight: asyncio.Future[int] | None = None

    def gather(self, data: bytes) -> None:
        self.gathered += data
        self.offset += len(data)

    async def settle(self) -> None:
        """Wait for the batch being written; UploadRefused if the Receiver refused it (what it and the
        gathered bytes held is then dropped: the next write must start at the bytes on disk)."""
        if self._inflight is None:
            return
        pending, self._inflight = self._inflight, None
        try:
            await pending
        except UploadRefused:
            self.gathered = bytearray()
            self.offset = self.receiver.offset
            raise

    async def hand_over(self, *, wait: bool = True) -> None:
        """Give the gathered bytes to the Receiver (the caller holds `lock`), in a worker thread; with
        `wait` false the next writes are taken while it hashes and writes them. UploadRefused if it
        refuses them."""
        await self.settle()
        if self.gathered:
            data, self.gathered = self.gathered, bytearray()
            start = self.offset - len(data)
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.receiver.write, start, data))
        if wait:
            await self.settle()

    async def finish(self, session: UploadSession, how: str) -> str | None:
        """Hand over what is gathered and let go of the upload (once); the refusal message, if any."""
        async with self.lock:
            if self.finished:
                return None
            self.finished = True
            session.writers.discard(self)
            refusal = None
            try:
                await self.hand_over()
            except UploadRefused as exc:
                refusal = str(exc)
            finally:
                await asyncio.to_thread(self.receiver.close)
            if session.conn.cut_reason is not None:
                how = f"cut-{session.conn.cut_reason}"
            session.registry.end(self.transfer, "refused" if refusal else how)
            return refusal


def _name(path: bytes) -> str:
    """The plain file name `path` stands for, "" for the root; anything with a directory is refused."""
    norm = posixpath.normpath("/" + path.decode("utf-8", "replace"))
    name = norm.lstrip("/")
    if name in ("", "."):
        return ""
    if "/" in name:
        raise SFTPNoSuchFile("An upload link has no directories: write to a plain file name")
    return name


def _attrs(kind: int, size: int, mtime: int) -> SFTPAttrs:
    return SFTPAttrs(
        size=size, uid=0, gid=0, owner="imagehub", group="imagehub", permissions=kind, atime=mtime, mtime=mtime
    )


class UploadSFTPServer(JailBasics, asyncssh.SFTPServer):
    """A root `/` whose every plain name is the upload, writable at its offset only."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan)
        session = chan.get_connection().get_extra_info("imagehub_session")
        if not isinstance(session, UploadSession):
            raise SFTPPermissionDenied("not authorised")
        self.s = session

    def _tell(self, message: str) -> None:
        """Show `message` to OpenSSH's sftp, which prints the server's stderr but no status message."""
        with contextlib.suppress(Exception):  # a closing channel: the status still says it
            self.channel.write(f"imagehub: {message}\n".encode(), EXTENDED_DATA_STDERR)

    def _refuse(self, message: str) -> SFTPFailure:
        log.info("link=%s client=%s upload refused: %s", self.s.receiving.link_id, self.s.peer, message)
        self._tell(message)
        return SFTPFailure(message)

    def _check_cut(self) -> None:
        if self.s.conn.cut_reason is not None:
            raise SFTPPermissionDenied("This upload link is no longer valid")

    def _received(self) -> int:
        """The upload's offset as this connection sees it: on disk, and what its writers gathered."""
        on_disk = current_offset(self.s.registry.catalog, self.s.receiving)
        return max([on_disk, *(writer.offset for writer in self.s.writers)])

    # ---- names
    def realpath(self, path: bytes) -> bytes:
        text = path.decode("utf-8", "replace")
        return posixpath.normpath("/" + text).replace("//", "/").encode()

    def stat(self, path: bytes) -> SFTPAttrs:
        self._check_cut()
        now = int(time.time())
        if not _name(path):
            return _attrs(stat_mod.S_IFDIR | 0o755, 0, now)
        return _attrs(stat_mod.S_IFREG | 0o644, self._received(), now)

    lstat = stat

    def fstat(self, file_obj: _Writer) -> SFTPAttrs:  # type: ignore[override]  # our handles
        return _attrs(stat_mod.S_IFREG | 0o644, file_obj.offset, int(time.time()))

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        self._check_cut()
        if _name(path):
            raise SFTPNoSuchFile("Not a directory")
        root = self.stat(b"/")
        yield SFTPName(b".", attrs=root)
        yield SFTPName(b"..", attrs=root)
        yield SFTPName(LISTED_NAME.encode(), attrs=self.stat(LISTED_NAME.encode()))

    # ---- the upload
    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> Any:
        if pflags & asyncssh.FXF_READ or not pflags & asyncssh.FXF_WRITE:
            raise SFTPPermissionDenied("This is an upload link: it takes writes only (put, reput)")
        return self._open(path, pflags)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> Any:
        raise SFTPOpUnsupported("Uploads take SFTP version 3")

    async def _open(self, path: bytes, pflags: int) -> _Writer:
        self._check_cut()
        name = _name(path)
        if not name:
            raise SFTPPermissionDenied("Is a directory")
        s = self.s
        try:
            await asyncio.to_thread(s.registry.validate_upload, s.token, "sftp", s.peer)
        except Refused:
            raise SFTPPermissionDenied("This upload link is no longer valid") from None
        transfer = s.registry.begin(s.conn, s.receiving.link_id, "sftp", s.peer, name)
        try:
            receiver = await asyncio.to_thread(s.registry.receiver, s.receiving, transfer)
        except UploadRefused as exc:
            s.registry.end(transfer, "refused")
            raise self._refuse(str(exc)) from None
        if pflags & _CHANGING and receiver.offset:
            await asyncio.to_thread(receiver.close)
            s.registry.end(transfer, "refused")
            raise self._refuse(
                f"this upload has {receiver.offset} bytes already: `put` would start it over;"
                f" use `reput` to continue at byte {receiver.offset}"
            )
        writer = _Writer(receiver, transfer)
        s.writers.add(writer)
        return writer

    async def write(self, file_obj: _Writer, offset: int, data: bytes) -> None:  # type: ignore[override]  # our handles
        """Acknowledge a write that continues the upload (gathered); any other is refused by the Receiver."""
        self._check_cut()
        self.s.conn.touch()  # gathered bytes reach the Receiver (which counts them) only every FLUSH_AT
        writer = file_obj
        async with writer.lock:
            if writer.finished:
                raise SFTPFailure("This upload handle is closed")
            try:
                if offset == writer.offset and offset + len(data) <= writer.receiver.size:
                    writer.gather(data)
                    last = writer.offset == writer.receiver.size
                    if len(writer.gathered) >= FLUSH_AT or last:
                        await writer.hand_over(wait=last)  # the last byte is acknowledged once it is in
                    return
                await writer.hand_over()
                await asyncio.to_thread(writer.receiver.write, offset, data)
            except UploadRefused as exc:
                raise self._refuse(str(exc)) from None

    async def fsync(self, file_obj: _Writer) -> None:  # type: ignore[override]  # our handles
        async with file_obj.lock:
            if file_obj.finished:
                return
            try:
                await file_obj.hand_over()
            except UploadRefused as exc:
                raise self._refuse(str(exc)) from None

    async def close(self, file_obj: _Writer) -> None:  # type: ignore[override]  # our handles
        refusal = await file_obj.finish(self.s, "closed")
        if refusal is not None:
            raise self._refuse(refusal)

    def _set(self, attrs: SFTPAttrs) -> None:
        changed = {field for field, value in vars(attrs).items() if value is not None and field not in _IGNORED}
        if changed - set(_HARMLESS_ATTRS):
            raise SFTPPermissionDenied("An upload's size and owner cannot be changed")

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._check_cut()
        if not _name(path):
            raise SFTPPermissionDenied("The root cannot be changed")
        self._set(attrs)

    lsetstat = setstat

    def fsetstat(self, file_obj: _Writer, attrs: SFTPAttrs) -> None:  # type: ignore[override]  # our handles
        self._set(attrs)

    # ---- everything else is refused
    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise SFTPPermissionDenied("This is an upload link: it cannot be read")

    def _one_file(self, *args: Any, **kwargs: Any) -> Any:
        raise SFTPPermissionDenied("An upload link holds one file: no removing, renaming, directories or links")

    remove = _one_file
    mkdir = _one_file
    rmdir = _one_file
    rename = _one_file
    posix_rename = _one_file
    symlink = _one_file
    link = _one_file
