"""The files download links serve: the stored image or a cached export, each with its SHA-256.

A link's format is either the image's stored format (served as is) or another one (`qcow2` of a
`raw` image), made once by `qemu-img convert` into `exports/` and kept until the image is destroyed.
Either way the file's SHA-256 is computed once and cached in a sidecar `<file>.sha256` in
`sha256sum -c` format; the sidecar carries the file's own mtime, so a replaced file is never
described by a stale sum. Both steps run as an `export` job (core.jobs.worker) that reports progress.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session, col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed, Invalid
from core.catalog.models import Image, Job, Phase
from core.disk import convert
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


def write_checksum(path: Path, progress: object = None) -> str:
    """Hash `path` and write its sidecar atomically; `progress(done, total)` is called as it goes."""
    st = path.stat()
    digest = hashlib.sha256()
    done = 0
    with path.open("rb", buffering=0) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            done += len(chunk)
            if callable(progress):
                progress(done, st.st_size)
    hexdigest = digest.hexdigest()
    side = sum_path(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(f"{hexdigest}  {path.name}\n", "ascii")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    if path.stat().st_mtime_ns != st.st_mtime_ns:
        tmp.unlink(missing_ok=True)
        raise Failed("{path_name} changed while its checksum was computed", path_name=path.name)
    os.replace(tmp, side)
    return hexdigest


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
    """Job kind `export`: convert (when the format differs from the stored one), then checksum."""

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
            last = [0.0]

            def report(done: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] > 0.5 or done == total:
                    last[0] = now
                    ctx.progress(Phase.CHECKSUM, done, total)
                if ctx.stop.is_set():
                    raise LeaseLost("stopping")

            ctx.progress(Phase.CHECKSUM, 0, target.stat().st_size, force=True)
            write_checksum(target, report)

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
            with db.read_session(ctx.catalog.engine) as session:
                image = session.get(Image, ctx.job.image_id)
                if image is None or not lifecycle.allows(image.status, Operation.DOWNLOAD):
                    raise Failed("image {image_id} is no longer available", image_id=ctx.job.image_id)
            store.publish_once(staged, target)
        finally:
            staged.unlink(missing_ok=True)

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        """Nothing on the image changes; only leftovers in staging go."""
        if job.image_id:
            for path in catalog.store.staging_dir.glob(f"{job.image_id}.export-{job.id}.*"):
                path.unlink(missing_ok=True)
        log.info("export job %s for image %s failed: %s", job.id, job.image_id, reason)
