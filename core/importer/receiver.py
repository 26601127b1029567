"""Receiving an upload's bytes: the one writer every protocol (SFTP, FTP, HTTP PUT, tus) goes through.

The upload's offset is the size of its staged source: the bytes that reached the disk, whatever
connection, process or node brought them. A write must start exactly there (no gaps, no overwriting
of what has arrived) and may not pass the upload's size. Nothing here hashes them: a writer that
comes back (to this process, after a restart, or on another node) goes on at once, and the bytes
cost the gateway one copy each. The import job hashes the staged source once every byte is in
(its `verifying` phase), from the page cache the writes just filled, and checks `--sha256` there.

One writer at a time: the writer holds an exclusive `flock` on the staged file (released by the
kernel if its process dies); a second writer, from any connection of any process on a host sharing
the data folder, is refused while the first is sending. A writer that has received nothing for
`QUIET_SECONDS` gives way instead (as tusd's lock release): a client whose network dropped without
its old connection closing comes back at once rather than after TCP keepalive. The newcomer leaves a
release request beside the staged file; the process holding the upload sees it (`poll_release_requests`,
from the gateway's once-a-second tick, or at once in the same process) and cuts its quiet writer.

Runs of zeros stay holes, so a sparse raw disk costs its data, not its
size, in the staging quota, which is checked as the bytes arrive. When the last byte is in,
`core.links.uploads.complete` hands the upload to its import job.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed, Msg
from core.importer.quota import StagingQuota
from core.links import uploads
from core.links.uploads import Receiving

HOLE_GRAIN = 1 << 20  # zero runs of this size (aligned to the upload) are left as holes
_ZEROS = bytes(HOLE_GRAIN)
PROGRESS_EVERY = 1.0  # seconds between progress records in the catalog
QUIET_SECONDS = 3.0  # a writer that received nothing for this long gives way to a new one
TAKEOVER_WAIT = 3.0  # how long a new writer waits for a quiet one to let go
RELEASE_NAME = "release"  # beside the staged source: a new writer asks the holder to let go


class UploadRefused(Exception):
    """A write (or a second writer) the upload does not take; the message is for the user.
    `offset`: the upload's offset when refused, for the protocols that report it (HTTP 409)."""

    def __init__(self, message: Msg | str, offset: int | None = None) -> None:
        super().__init__(str(message))
        self.offset = offset


_state_lock = threading.Lock()  # guards _holders
# The uploads this process writes (link id -> its writer), for release requests.
_holders: dict[str, Receiver] = {}


def _is_zero(view: memoryview) -> bool:
    n = len(view)
    if n == 0 or view[0] or view[n - 1]:
        return n == 0
    return view.tobytes() == (_ZEROS if n == HOLE_GRAIN else bytes(n))


class Receiver:
    """One writer's hold on an upload. `open`, then `write` at `offset` until `complete`; `close`
    always. Not thread-safe: one caller thread at a time (the faces run it in a worker thread)."""

    def __init__(
        self,
        catalog: Catalog,
        receiving: Receiving,
        protocol: str,
        peer: str = "-",
        on_bytes: Callable[[int], None] | None = None,
        on_release: Callable[[], None] | None = None,
        activity: Callable[[], float] | None = None,
    ) -> None:
        self.catalog = catalog
        self.on_release = on_release  # cuts this writer's connection when a new writer needs the upload
        self.activity = activity  # when its connection last received anything (a face that gathers writes)
        self.last_active = time.monotonic()
        self.receiving = receiving
        self.protocol = protocol
        self.peer = peer
        self.on_bytes = on_bytes
        self.path = receiving.source(catalog)
        self.offset = 0
        self.started_at = 0
        self.complete = False
        self._fd = -1
        self._broken = False
        self._recorded_at = 0.0
        self._quota = StagingQuota(catalog, receiving.tenant_id, catalog.settings.import_.staging_quota_gb)

    @property
    def size(self) -> int:
        return self.receiving.size

    def open(self) -> int:
        """Take the upload (UploadRefused if another writer has it); its offset."""
        folder_existed = self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._lock(fd)
            if not uploads.waiting(self.catalog, self.receiving.job_id):
                # it ended (complete, cancelled, expired) since its token was checked: leave nothing behind
                if not folder_existed:
                    shutil.rmtree(self.path.parent, ignore_errors=True)
                raise UploadRefused(Msg("this upload has ended: it takes no more bytes"))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.last_active = time.monotonic()
        with _state_lock:
            _holders[self.receiving.link_id] = self
        self.offset = self.started_at = os.fstat(fd).st_size
        return self.offset

    def _lock(self, fd: int) -> None:
        """Take the upload's lock; if a writer holds it, ask it to let go (it does if it is quiet) and
        wait a little for that; else refuse."""
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + TAKEOVER_WAIT
                if not self._request_release():
                    deadline = now  # its writer is in this process and still sending: refuse at once
            if now >= deadline:
                raise UploadRefused(
                    Msg("another connection is writing this upload: one writer at a time; try again when it ends")
                )
            time.sleep(0.05)

    def _request_release(self) -> bool:
        """Ask the upload's writer to let go; False when it is in this process and will not (it is
        sending). One in another process is asked through a file its gateway looks for each second."""
        with _state_lock:
            holder = _holders.get(self.receiving.link_id)
        if holder is not None and holder is not self:
            return holder.release_if_quiet()
        with contextlib.suppress(OSError):
            (self.path.parent / RELEASE_NAME).write_text(str(time.time()))
        return True

    def release_if_quiet(self) -> bool:
        """Cut this writer's connection if it has received nothing for QUIET_SECONDS (a new writer
        asked for the upload); True if it was asked to let go."""
        last = max(self.last_active, self.activity() if self.activity is not None else 0.0)
        if self._fd < 0 or self.on_release is None or time.monotonic() - last < QUIET_SECONDS:
            return False
        self.on_release()
        return True

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Add `data` at `offset`, which must be the upload's offset; the new offset."""
        if self._fd < 0 or self._broken:
            raise UploadRefused(Msg("this upload is not open for writing"))
        view = memoryview(data).cast("B")
        n = len(view)
        if offset != self.offset:
            raise UploadRefused(
                Msg(
                    "this upload has {offset} bytes; a write must continue at byte {offset}, not {asked}"
                    " (no gaps, no overwriting)",
                    offset=self.offset,
                    asked=offset,
                ),
                self.offset,
            )
        if self.offset + n > self.size:
            raise UploadRefused(
                Msg(
                    "this upload takes exactly {size} bytes (--bytes); {count} more at byte {offset} would pass it",
                    size=self.size,
                    count=n,
                    offset=self.offset,
                ),
                self.offset,
            )
        try:
            self._quota.check(coming=n)
        except Failed as exc:
            raise UploadRefused(str(exc), self.offset) from None
        try:
            self._put(view)
        except BaseException:
            self._broken = True  # part of it may be on disk: the next writer starts from the file's size
            raise
        self.offset += n
        self.last_active = time.monotonic()
        if self.on_bytes is not None:
            self.on_bytes(n)
        if self.offset == self.size:
            self._finish()
        elif time.monotonic() - self._recorded_at >= PROGRESS_EVERY:
            self._record_progress()
        return self.offset

    def _put(self, view: memoryview) -> None:
        """Write `view` at the offset; runs of zeros are left as holes."""
        n = len(view)
        position = 0
        while position < n:
            # slices end on HOLE_GRAIN boundaries of the upload, so that zero runs line up with blocks
            end = min(n, position + HOLE_GRAIN - (self.offset + position) % HOLE_GRAIN)
            piece = view[position:end]
            if _is_zero(piece):
                os.ftruncate(self._fd, self.offset + end)
            else:
                done = 0
                while done < len(piece):
                    done += os.pwrite(self._fd, piece[done:], self.offset + position + done)
            position = end

    def mark(self) -> int:
        """Where the upload is now, for `rollback` (tus's checksum: a chunk that fails it is dropped)."""
        return self.offset

    def rollback(self, mark: int) -> None:
        if self.complete or mark > self.offset:
            return
        os.ftruncate(self._fd, mark)
        self.offset = mark

    def _record_progress(self) -> None:
        self._recorded_at = time.monotonic()
        uploads.record_progress(self.catalog, self.receiving.job_id, self.offset, self.size)

    def _finish(self) -> None:
        self._record_audit()
        if not uploads.complete(self.catalog, self.receiving, self.protocol, self.peer):
            raise UploadRefused(Msg("this upload was cancelled or has expired"), self.offset)
        self.complete = True

    def _record_audit(self) -> None:
        """One audit entry per writer that brought bytes: which protocol, from where, which range."""
        if self.offset == self.started_at:
            return
        with db.write_session(self.catalog.engine) as session:
            audit.record(
                session,
                "imagehub gateway",
                "upload.receive",
                self.receiving.image_id,
                link=self.receiving.link_id,
                protocol=self.protocol,
                peer=self.peer,
                start=self.started_at,
                end=self.offset,
            )
        self.started_at = self.offset

    def close(self) -> None:
        """Let go of the upload (idempotent), its progress recorded."""
        if self._fd < 0:
            return
        try:
            if not self.complete:
                with contextlib.suppress(Exception):  # the catalog may be away: the bytes are on disk
                    self._record_audit()
                    self._record_progress()
        finally:
            with _state_lock:
                if _holders.get(self.receiving.link_id) is self:
                    del _holders[self.receiving.link_id]
            os.close(self._fd)
            self._fd = -1


def poll_release_requests() -> int:
    """Cut this process's quiet writers whose upload another writer asked for (run about once a
    second by the gateway); how many were asked to let go."""
    with _state_lock:
        holders = list(_holders.values())
    released = 0
    for holder in holders:
        request = holder.path.parent / RELEASE_NAME
        try:
            asked = request.stat().st_mtime
        except OSError:
            continue
        if time.time() - asked < TAKEOVER_WAIT + 1 and holder.release_if_quiet():
            released += 1
            request.unlink(missing_ok=True)
    return released


def open_receiver(
    catalog: Catalog,
    receiving: Receiving,
    protocol: str,
    peer: str = "-",
    on_bytes: Callable[[int], None] | None = None,
    on_release: Callable[[], None] | None = None,
    activity: Callable[[], float] | None = None,
) -> Receiver:
    """A Receiver that holds the upload (UploadRefused if another writer has it and is sending)."""
    receiver = Receiver(catalog, receiving, protocol, peer, on_bytes, on_release, activity)
    receiver.open()
    return receiver


def current_offset(catalog: Catalog, receiving: Receiving) -> int:
    """The upload's offset (bytes on disk), without taking it: for SIZE, stat and HEAD."""
    try:
        return receiving.source(catalog).stat().st_size
    except FileNotFoundError:
        return 0
