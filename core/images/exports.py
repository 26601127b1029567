"""The files download links serve: the stored image or a cached export, each with its SHA-256.

A link's format is either the image's stored format (served as is) or another one (`qcow2` of a
`raw` image), made once by `qemu-img convert` into `exports/` and kept until the image is destroyed.
Either way the file's SHA-256 is computed once and cached in a sidecar `<file>.sha256` in
`sha256sum -c` format; the sidecar carries the file's own mtime, so a replaced file is never
described by a stale sum. The import writes the stored file's sidecar before it publishes the file
when default links serve the stored format (`hashed_at_import`; an ISO's always: its transfer's
SHA-256), so such a link is ready at once; an export is hashed as soon as `qemu-img` has written it,
while it is still in the page cache, and published with its sidecar. A stored file without a
sidecar (raw while links.default_format is qcow2, a capture's, one stored before sidecars) is hashed
by an `export` job (core.jobs.worker) when a link asks for it, reporting progress.

Hashing reads only a file's data: its holes (SEEK_HOLE), which are most of a raw disk, are fed to
SHA-256 from a buffer of zeros instead of being read, so a 20 GiB raw disk holding 64 MiB costs
what SHA-256 of 20 GiB costs in memory, not a read of 20 GiB.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session, col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed, Invalid
from core.catalog.models import Image, Job, Phase
from core.catalog.settings import Settings
from core.disk import convert, qemu
from core.disk.convert import Limits
from core.jobs import jobs
from core.jobs.context import JobContext, LeaseLost
from core.rules import lifecycle
from core.rules.lifecycle import Operation

log = logging.getLogger("imagehub.exports")

KIND = "export"
FORMATS = ("raw", "qcow2")
SUM_SUFFIX = ".sha256"
_CHUNK = 8 * 1024 * 1024
_ZEROS = memoryview(bytes(1024 * 1024))  # what a hole reads as, fed to SHA-256 instead of reading it
# A raw download is called "mostly zeros" when its holes are more than half of it.
MOSTLY_ZEROS = 0.5

Progress = Callable[[int, int], None]


def requested_format(settings: Settings, image: Image, fmt: str | None) -> str:
    """The format a link serves: `fmt` when one is asked for, else links.default_format (an ISO:
    as it is); refused as `effective_format` refuses."""
    if fmt is None:
        fmt = "iso" if image.disk_format == "iso" else settings.links.default_format
    return effective_format(image, fmt)


def hashed_at_import(settings: Settings, disk_format: str) -> bool:
    """Whether an import hashes the file it stores, so that links serving it are ready at once: when
    default links serve the stored format. SHA-256 of a raw disk costs its whole virtual size in CPU
    (about 1.5 GiB/s on one core, holes included: 500 GiB takes minutes), which every import would pay
    for a format asked for only on request; such a link is hashed on request instead."""
    return disk_format == settings.links.default_format


def effective_format(image: Image, fmt: str) -> str:
    """The format a link serves when `fmt` is asked for: an ISO (installation media) only as it is."""
    if image.disk_format == "iso":
        if fmt in ("raw", "iso"):
            return "iso"
        raise Invalid(
            "image {image_id} is an ISO (installation media) and is downloaded as it is; leave out --format",
            image_id=image.id,
        )
    if fmt not in FORMATS:
        raise Invalid("format {fmt} is unknown; choose one of {choices}", fmt=fmt, choices=", ".join(FORMATS))
    return fmt


def served_path(catalog: Catalog, image: Image, fmt: str) -> Path:
    """Where the file served for `image` in format `fmt` lives (stored file or export cache)."""
    fmt = effective_format(image, fmt)
    if image.disk_format == fmt:
        return catalog.store.image_path(image.id, fmt)
    return catalog.store.export_path(image.id, fmt)


def sum_path(path: Path) -> Path:
    return path.with_name(path.name + SUM_SUFFIX)


def read_checksum(path: Path) -> str | None:
    """The cached SHA-256 of `path`, or None when the file or an up-to-date sidecar is missing."""
    try:
        st = path.stat()
        side = sum_path(path)
        if side.stat().st_mtime_ns != st.st_mtime_ns:
            return None
        text = side.read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.split(" ", 1)[0].strip()
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of `fd` that hold data; everything else is a hole. A file system
    without SEEK_DATA reports the whole file as data."""
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after `offset`: the rest is a hole
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(offset, size)]
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        offset = end
    return extents


def sparse_sha256(path: Path, progress: Progress | None = None) -> str:
    """SHA-256 of `path` (what `sha256sum` prints), reading only its data: holes are hashed as zeros
    from memory. `progress(done, total)` is called as it goes."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))
    with path.open("rb", buffering=0) as handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, size)

        def zeros_until(end: int) -> None:
            while done < end:
                run = min(len(_ZEROS), end - done)
                digest.update(_ZEROS[:run])
                advance(run)

        for start, end in _data_extents(fd, size):
            zeros_until(start)
            while done < end:
                count = os.preadv(fd, [buffer[: min(_CHUNK, end - done)]], done)
                if count <= 0:  # the file shrank under us: the mtime check refuses the sum
                    raise Failed("{path_name} changed while its checksum was computed", path_name=path.name)
                digest.update(buffer[:count])
                advance(count)
        zeros_until(size)
    return digest.hexdigest()


def write_checksum(path: Path, progress: Progress | None = None, listed_name: str | None = None) -> str:
    """Hash `path` and write its sidecar atomically; `progress(done, total)` is called as it goes.
    `listed_name`: the name the sidecar gives the file (its name once published; default its own)."""
    st = path.stat()
    hexdigest = sparse_sha256(path, progress)
    if path.stat().st_mtime_ns != st.st_mtime_ns:
        raise Failed("{path_name} changed while its checksum was computed", path_name=path.name)
    write_sidecar(path, hexdigest, listed_name, st)
    return hexdigest


def write_sidecar(path: Path, hexdigest: str, listed_name: str | None = None, st: os.stat_result | None = None) -> None:
    """Write `path`'s sidecar saying `hexdigest`, stamped with the file's mtime (`st`: as it was hashed)."""
    st = st or path.stat()
    side = sum_path(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(f"{hexdigest}  {listed_name or path.name}\n", "ascii")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    if path.stat().st_mtime_ns != st.st_mtime_ns:
        tmp.unlink(missing_ok=True)
        raise Failed("{path_name} changed while its checksum was computed", path_name=path.name)
    os.replace(tmp, side)


def publish_sidecar(staged: Path, final: Path) -> None:
    """Move the sidecar of `staged` (written with `listed_name=final.name`) beside `final`, which
    `staged` has just become (a rename or a hard link keeps its mtime, so the sidecar still holds)."""
    os.replace(sum_path(staged), sum_path(final))


@dataclass(frozen=True)
class DownloadSize:
    """What a link in `format` would serve: `size` bytes (`exact` False: an estimate, the export
    is not made yet); `mostly_zeros`: most of it is the disk's empty space (a raw download)."""

    format: str
    size: int
    exact: bool
    mostly_zeros: bool = False


def download_sizes(catalog: Catalog, image: Image) -> list[DownloadSize]:
    """The download size of each format a link to `image` may serve (an ISO: one, as it is)."""
    stored = catalog.store.image_path(image.id, image.disk_format or "")
    st = stored.stat()
    allocated = min(st.st_blocks * 512, st.st_size)
    if image.disk_format == "iso":
        return [DownloadSize("iso", st.st_size, True)]
    virtual = image.virtual_size or st.st_size
    sizes = []
    for fmt in FORMATS:
        path = served_path(catalog, image, fmt)
        if path.is_file():
            size, exact = path.stat().st_size, True
        elif fmt == "raw":
            size, exact = virtual, True  # a raw file is as long as its virtual disk
        else:
            size, exact = _about(stored, image.disk_format or "raw", fmt, allocated), False
        mostly_zeros = fmt == "raw" and allocated < size * MOSTLY_ZEROS
        sizes.append(DownloadSize(fmt, size, exact, mostly_zeros))
    return sizes


def _about(stored: Path, stored_format: str, fmt: str, allocated: int) -> int:
    """About how large an export in `fmt` will be: qemu-img's measure of the stored disk (its data and
    the format's tables), else the data the stored disk holds."""
    try:
        return qemu.measure(stored, stored_format, fmt)
    except (Failed, ValueError, KeyError) as exc:
        log.warning("qemu-img measure of %s failed: %s", stored, exc)
        return allocated


def is_ready(catalog: Catalog, image: Image, fmt: str) -> bool:
    return read_checksum(served_path(catalog, image, fmt)) is not None


def active_job(session: Session, image_id: str, fmt: str) -> Job | None:
    statement = select(Job).where(Job.image_id == image_id, Job.kind == KIND, col(Job.state).in_(jobs.ACTIVE_STATES))
    for job in session.exec(statement):
        if jobs.params_of(job).get("format") == fmt:
            return job
    return None


def latest_job(session: Session, image_id: str, fmt: str) -> Job | None:
    statement = select(Job).where(Job.image_id == image_id, Job.kind == KIND).order_by(col(Job.id).desc())
    for job in session.exec(statement):
        if jobs.params_of(job).get("format") == fmt:
            return job
    return None


def ensure(catalog: Catalog, session: Session, image: Image, fmt: str) -> Job | None:
    """Queue the work that makes `fmt` of `image` servable, unless it is ready or under way."""
    if is_ready(catalog, image, fmt):
        return None
    if session.get_bind().dialect.name != "sqlite":
        # Two nodes asking at once must find one job, not make one each (SQLite's writes are serial).
        session.connection().execute(text("SELECT pg_advisory_xact_lock(8212002)"))
    job = active_job(session, image.id, fmt)
    if job is not None:
        return job
    return jobs.submit(session, KIND, image.id, {"format": fmt})


class ExportJob:
    """Job kind `export`: convert (when the format differs from the stored one) and hash the result
    at once, in one step; or only hash a stored file that has no sidecar yet."""

    kind = KIND

    def run(self, ctx: JobContext) -> None:
        fmt = ctx.params.get("format", "raw")
        image_id = ctx.job.image_id or ""
        with db.read_session(ctx.catalog.engine) as session:
            image = session.get(Image, image_id)
        if image is None or not lifecycle.allows(image.status, Operation.DOWNLOAD):
            raise Failed("image {image_id} is no longer available", image_id=image_id)
        if not image.disk_format:
            raise Failed("image {image_id} has no stored file", image_id=image_id)
        source = ctx.catalog.store.image_path(image_id, image.disk_format)
        target = served_path(ctx.catalog, image, fmt)
        if not source.is_file():
            raise Failed("the stored file of image {image_id} is missing", image_id=image_id)
        if target != source and not target.is_file():
            self._convert(ctx, source, image.disk_format, target, fmt)
        if read_checksum(target) is None:
            self._checksum(ctx, target)

    @staticmethod
    def _checksum(ctx: JobContext, path: Path, listed_name: str | None = None) -> None:
        """Hash `path` into its sidecar, with the job's progress in `checksum`."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                ctx.progress(Phase.CHECKSUM, done, total)
            if ctx.stop.is_set():
                raise LeaseLost("stopping")

        ctx.progress(Phase.CHECKSUM, 0, path.stat().st_size, force=True)
        write_checksum(path, report, listed_name)

    def _convert(self, ctx: JobContext, source: Path, src_fmt: str, target: Path, fmt: str) -> None:
        store = ctx.catalog.store
        store.staging_dir.mkdir(parents=True, exist_ok=True)
        staged = store.staging_path(f"{ctx.job.image_id}.export-{ctx.job.id}.{fmt}")
        staged.unlink(missing_ok=True)
        total = source.stat().st_size
        ctx.progress(Phase.CONVERTING, 0, total, force=True)
        try:
            convert.convert(
                source,
                src_fmt,
                staged,
                fmt,
                limits=Limits.of(ctx.catalog.settings.import_),
                on_progress=lambda fraction: ctx.progress(Phase.CONVERTING, int(total * fraction), total),
                heartbeat=ctx.heartbeat,
                heartbeat_seconds=1.0,
                scrub_paths=[store.data_dir],
            )
            self._checksum(ctx, staged, target.name)  # while qemu-img's output is still in the page cache
            with db.read_session(ctx.catalog.engine) as session:
                image = session.get(Image, ctx.job.image_id)
                if image is None or not lifecycle.allows(image.status, Operation.DOWNLOAD):
                    raise Failed("image {image_id} is no longer available", image_id=ctx.job.image_id)
            if store.publish_once(staged, target):
                publish_sidecar(staged, target)
        finally:
            staged.unlink(missing_ok=True)
            sum_path(staged).unlink(missing_ok=True)

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        """Nothing on the image changes; only leftovers in staging go."""
        if job.image_id:
            for path in catalog.store.staging_dir.glob(f"{job.image_id}.export-{job.id}.*"):
                path.unlink(missing_ok=True)
        log.info("export job %s for image %s failed: %s", job.id, job.image_id, reason)
