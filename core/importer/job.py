"""The `import` job: fetch, verify, inspect, convert, resize, publish — resumable at every step.

Phases (stored on the job for `image show`, `--wait` and the TUI): downloading, verifying,
inspecting, converting, resizing, finishing. Everything happens in `staging/<image>.import/`:

- `source`        the source as received (sparse); `fetch.json` the validator of the first response;
- `received.json` written once the source is complete, with its SHA-256 and size.

A worker that dies leaves that folder; the next worker to claim the job continues from it: the
download from the bytes on disk (hashing them once), the later steps from the complete source.
A store file left by a crash between publishing and recording is removed and redone.

Inspecting refuses a dangerous or unclear format (`inspect`), a damaged or truncated source
(`integrity`, docs/security.md F13) and anything that is not a disk (`diskprobe`, F14: a raw source before
conversion, any other format once converted); the converted disk's partition table is checked too
(`partitions`, F7). The image
becomes `available` only after the file is in the store, in a transaction that checks this worker
still holds the job. Any failure: `import_failed` with one line, staging removed, nothing stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed
from core.catalog.models import Image, Job, Phase, Status
from core.disk.convert import Limits
from core.images import exports
from core.images.images import record_import_failed
from core.importer import convert, credentials, diskprobe, inspect, integrity, partitions, sources
from core.importer.localfiles import check_local_file
from core.importer.netpolicy import Policy
from core.importer.quota import StagingQuota
from core.importer.submit import KIND
from core.jobs import jobs
from core.jobs.context import JobContext, LeaseLost
from core.rules import lifecycle

log = logging.getLogger("imagehub.import")

GIB = 1 << 30
STORE_FORMATS = ("raw", "qcow2")


def staging_folder(catalog: Catalog, image_id: str) -> Path:
    return catalog.store.import_staging(image_id)


def size_cap(target_bytes: int) -> int:
    """Most bytes a source may have for this target: the target plus format overhead."""
    return target_bytes + target_bytes // 16 + (64 << 20)


def _remove_store_files(catalog: Catalog, image_id: str) -> None:
    for fmt in ("raw", "qcow2", "iso"):
        path = catalog.store.image_path(image_id, fmt)
        path.unlink(missing_ok=True)
        exports.sum_path(path).unlink(missing_ok=True)


class LeaseKeeper:
    """Renews the job's lease from a thread of its own while this process lives, so that a source
    that goes quiet for a while does not let a second worker take the job while this one may still
    write; only the stall sweep (no progress for `stall_timeout_seconds`) ends such a job. Once the
    lease is lost, `check` raises and the staged file is not written any more."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.lost = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lease-{ctx.job.id}", daemon=True)

    def _run(self) -> None:
        interval = max(0.2, self.ctx.lease_seconds / 3)
        while not self.done.wait(interval):
            try:
                held = jobs.renew(self.ctx.catalog.engine, self.ctx.job.id or 0, self.ctx.owner, self.ctx.lease_seconds)
            except Exception:  # the database is busy or away: try again at the next tick
                log.warning("job %s: lease renewal failed", self.ctx.job.id, exc_info=True)
                continue
            if not held:
                self.lost.set()
                return

    def check(self) -> None:
        if self.lost.is_set() or self.ctx.stop.is_set():
            raise LeaseLost(f"job {self.ctx.job.id} is no longer held")

    def __enter__(self) -> LeaseKeeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)


def run_import(ctx: JobContext) -> None:
    with LeaseKeeper(ctx) as keeper:
        _run_import(ctx, keeper)


def _run_import(ctx: JobContext, keeper: LeaseKeeper) -> None:
    catalog = ctx.catalog
    image_id = ctx.job.image_id
    assert image_id is not None
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        if image is None or image.status != Status.IMPORTING:
            raise Failed("image {image_id} is no longer importing", image_id=image_id)
        tenant_id = image.tenant_id
    params = ctx.params
    settings = catalog.settings.import_
    store_format = settings.store_format if settings.store_format in STORE_FORMATS else "raw"
    target_bytes = int(params["target_size_gb"]) * GIB
    work = staging_folder(catalog, image_id)
    work.mkdir(parents=True, exist_ok=True)
    _remove_store_files(catalog, image_id)
    received = work / "received.json"
    source_file = work / "source"
    quota = StagingQuota(catalog, tenant_id, settings.staging_quota_gb)

    # downloading
    summary = _read_summary(received)
    if summary is not None and not source_file.exists():
        summary = None  # a raw or ISO source moved on by a run that died before recording: fetch again
    if summary is not None and not _staged_intact(ctx, source_file, summary):
        summary = None
        source_file.unlink(missing_ok=True)  # the machine went down before the staged file was on disk
    if summary is None and params.get("source") == "upload":
        raise Failed("the uploaded file is no longer in staging; upload it again with a new link")
    if summary is None:
        received.unlink(missing_ok=True)
        ctx.progress(Phase.DOWNLOADING, 0, None, force=True)

        def report(done: int, total: int | None) -> None:  # at once when the total becomes known
            ctx.progress(Phase.DOWNLOADING, done, total, force=total is not None and total != ctx.job.bytes_total)

        quota.check(now=True)

        def guard() -> None:  # in the writing thread, before each chunk
            keeper.check()
            quota.check()

        sink = sources.StagedFile(source_file, size_cap(target_bytes), report)
        sink.guard = guard
        sink.open(rehash=lambda done: ctx.progress(Phase.DOWNLOADING, done, None))
        try:
            if params.get("source") == "file":
                # checked again: the folder rules may have changed, or a path component been swapped
                sources.fetch_file(
                    check_local_file(ctx.catalog.settings, params["path"], internal=bool(params.get("internal"))), sink
                )
            else:
                url = credentials.unseal(catalog.secret(), ctx.job.secret) if ctx.job.secret else params["url"]
                policy = Policy.from_settings(catalog.settings)
                timeout = float(min(60, max(5, settings.stall_timeout_seconds)))
                sources.fetch_url(
                    policy, policy.parse(url), sink, work / "fetch.json", timeout=timeout, ca_bundle=settings.ca_bundle
                )
            digest = sink.finish()
        finally:
            sink.close()
        summary = {"sha256": digest, "size": sink.written}
        partial = work / "received.json.tmp"
        partial.write_text(json.dumps(summary))
        os.replace(partial, received)
    size = int(summary["size"])

    # verifying
    if summary.get("sha256") is None:  # an upload: hashed here, once, now that every byte is in
        summary["sha256"] = _hash_file(ctx, source_file, size)
        partial = work / "received.json.tmp"
        partial.write_text(json.dumps(summary))
        os.replace(partial, received)
    ctx.progress(Phase.VERIFYING, size, size, force=True)
    expected = params.get("sha256")
    if expected and expected != summary["sha256"]:
        raise Failed("SHA-256 mismatch: expected {expected}, got {actual}", expected=expected, actual=summary["sha256"])

    # inspecting
    ctx.progress(Phase.INSPECTING, 0, size, force=True)
    found = inspect.detect(source_file)
    disk = source_file
    if found.format == "ova":
        disk = work / "ova-disk"
        member_size = int(found.detail["size"])
        convert.copy_member(
            source_file,
            int(found.detail["offset"]),
            member_size,
            disk,
            lambda done: ctx.progress(Phase.INSPECTING, done, member_size),
        )
        found = inspect.detect(disk)
        if found.format not in inspect.DISK_FORMATS:
            raise inspect.Refused("OVA disk in {disk_format} format refused", disk_format=found.format)
    if found.format == "iso":
        inspect.check_target(found, target_bytes)
        output, disk_format, virtual_size = disk, "iso", found.virtual_size
    else:
        integrity.check_tables(disk, found.format)  # before qemu-img opens it: a truncation is named as one
        inspect.cross_check(disk, found)
        inspect.check_target(found, target_bytes)
        integrity.check_with_qemu(disk, found.format)
        integrity.check_mapping(disk, found.format)
        if settings.require_disk_structure and found.format == "raw":
            diskprobe.check_raw(disk)  # the source is the disk: refused before any conversion
        log.info("image %s: %s, virtual size %s", image_id, found.format, found.virtual_size)

        # converting
        output = work / f"output.{store_format}"
        ctx.progress(Phase.CONVERTING, 0, found.virtual_size, force=True)
        seen = {"fraction": 0.0}

        def converting(fraction: float) -> None:  # progress only when qemu-img advanced: stalls show
            if fraction != seen["fraction"]:
                seen["fraction"] = fraction
                ctx.progress(Phase.CONVERTING, int(fraction * found.virtual_size), found.virtual_size)
            else:
                keeper.check()

        convert.convert(disk, found.format, output, store_format, converting, limits=Limits.of(settings))
        quota.check(now=True)  # the converted disk is staged too
        if disk == source_file and not source_file.exists():
            received.unlink(missing_ok=True)  # raw -> raw moved the source: a rerun must fetch it again

        # resizing
        ctx.progress(Phase.RESIZING, 0, target_bytes, force=True)
        convert.resize(output, store_format, target_bytes)
        inspect.check_output(output, store_format, target_bytes)
        head = partitions.read_head(output, store_format)
        partitions.check(head, target_bytes)
        if settings.require_disk_structure and found.format != "raw":
            diskprobe.check_disk(output, store_format, target_bytes, head)
        disk_format, virtual_size = store_format, target_bytes

    # the stored file's checksum, so that a link serving it as it is is ready at once
    final = catalog.store.image_path(image_id, disk_format)
    hashed = output == source_file or exports.hashed_at_import(catalog.settings, disk_format)
    if output == source_file:  # an ISO, kept as received: the transfer's SHA-256 is the file's
        exports.write_sidecar(output, summary["sha256"], final.name)
    elif hashed:
        _checksum(ctx, keeper, output, final.name)

    # finishing
    ctx.progress(Phase.FINISHING, virtual_size, virtual_size, force=True)
    catalog.store.publish(output, final)
    if hashed:
        exports.publish_sidecar(output, final)
    try:
        _record_available(ctx, image_id, disk_format, virtual_size, summary["sha256"])
    except BaseException:
        final.unlink(missing_ok=True)
        exports.sum_path(final).unlink(missing_ok=True)
        raise
    shutil.rmtree(work, ignore_errors=True)


def _checksum(ctx: JobContext, keeper: LeaseKeeper, path: Path, listed_name: str) -> None:
    """Write the sidecar of the disk about to be stored (holes hashed from memory, not read), with
    the job's progress in `checksum`."""
    total = path.stat().st_size
    ctx.progress(Phase.CHECKSUM, 0, total, force=True)

    def report(done: int, size: int) -> None:
        keeper.check()
        ctx.progress(Phase.CHECKSUM, done, size)

    exports.write_checksum(path, report, listed_name)


def _read_summary(path: Path) -> dict[str, Any] | None:
    """What a finished transfer recorded (its size, and its SHA-256 but for an upload not yet
    hashed), if anything."""
    try:
        summary = json.loads(path.read_text())
        int(summary["size"])
        if not isinstance(summary.get("sha256", ""), str):
            raise TypeError("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return dict(summary)


def _staged_intact(ctx: JobContext, path: Path, summary: dict[str, Any]) -> bool:
    """A complete source left by an earlier attempt: trust it only if it still hashes the same."""
    if ctx.job.attempts <= 1:
        return True
    total = int(summary["size"])
    if not path.exists() or path.stat().st_size != total:
        return False
    return summary.get("sha256") is None or _hash_file(ctx, path, total) == summary["sha256"]


def _hash_file(ctx: JobContext, path: Path, total: int) -> str:
    """The SHA-256 of a staged file, with the job's progress in `verifying`."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(4 << 20))
    done = 0
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(buffer[:n])
            done += n
            ctx.progress(Phase.VERIFYING, done, total)
    return digest.hexdigest()


def _record_available(ctx: JobContext, image_id: str, disk_format: str, virtual_size: int, sha256: str) -> None:
    with db.write_session(ctx.catalog.engine) as session:
        held = session.exec(
            select(Job).where(col(Job.id) == ctx.job.id, Job.lease_owner == ctx.owner, Job.state == jobs.RUNNING)
        ).first()
        image = session.get(Image, image_id)
        if held is None or image is None or image.status != Status.IMPORTING:
            raise LeaseLost(f"job {ctx.job.id} is no longer held")
        image.disk_format = disk_format
        image.virtual_size = virtual_size
        image.sha256 = sha256
        image.error = None
        image.error_detail = None
        lifecycle.transition(
            session,
            image,
            Status.AVAILABLE,
            actor="imagehub worker",
            action="image.import",
            disk_format=disk_format,
            sha256=sha256,
        )


def record_failed(session: Session, image_id: str | None, reason: str) -> None:
    """importing -> import_failed with the reason, inside the caller's transaction."""
    record_import_failed(session, image_id, reason, outcome=jobs.FAILED)


def remove_leftovers(catalog: Catalog, image_id: str | None) -> None:
    """Staging and any store file of a failed import (idempotent)."""
    if image_id is None:
        return
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        if image is not None and image.status != Status.IMPORT_FAILED:
            return  # restarted or retried meanwhile: its files are not leftovers
    shutil.rmtree(staging_folder(catalog, image_id), ignore_errors=True)
    _remove_store_files(catalog, image_id)


def mark_failed(catalog: Catalog, image_id: str | None, reason: str) -> None:
    """importing -> import_failed with the reason; staging and any store file removed."""
    with db.write_session(catalog.engine) as session:
        record_failed(session, image_id, reason)
    remove_leftovers(catalog, image_id)


class ImportHandler:
    kind = KIND

    def run(self, ctx: JobContext) -> None:
        run_import(ctx)

    def record_failure(self, session: Session, job: Job, reason: str) -> None:
        record_failed(session, job.image_id, reason)

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        mark_failed(catalog, job.image_id, reason)  # a no-op write once record_failure ran
