"""Upload links: the way a file on the user's own computer becomes an import (SFTP, FTP, HTTP, tus).

`image import --upload --bytes N` (core.importer.upload) creates the image (`importing`), its import
job in state `waiting` (no worker claims it) and a link of kind `upload`, whose token is made and kept
exactly like a download link's. Every protocol writes through `core.importer.receiver`, into the
import's staging folder, as the `source` a URL import would have fetched; the bytes already on disk
are the upload's offset. Once exactly `size` bytes have arrived, `complete` records what the import
job expects of a finished download (`received.json`: SHA-256 and size) and queues the job: from there
the upload is an import like any other (checksum, inspection, conversion, publish).

An upload ends early in two ways, both here so that every path says the same:
- `link revoke` (or its maker's account deleted): `import_failed`, "upload cancelled";
- its link's lifetime over before the last byte: `import_failed`, "upload expired" (the worker's sweep).
Either way the staged bytes are removed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.errors import Msg
from core.catalog.models import Image, Job, Link, Phase, Status
from core.catalog.vocabulary import LinkState
from core.images.images import record_import_failed
from core.jobs import jobs

UPLOAD = "upload"
IMPORT_KIND = "import"  # the job kind (core.importer.submit.KIND, a layer above)
SOURCE_NAME = "source"  # the import job's staged source (core.importer.job)
SUMMARY_NAME = "received.json"  # what the import job reads of a finished transfer
CANCELLED = Msg("upload cancelled")
EXPIRED = Msg("upload expired")


@dataclass(frozen=True)
class Receiving:
    """What a valid upload token opens: the staged source of one importing image, `size` bytes long."""

    link_id: str
    image_id: str
    tenant_id: int
    job_id: int
    size: int
    expires_at: datetime

    def source(self, catalog: Catalog) -> Path:
        return catalog.store.import_staging(self.image_id) / SOURCE_NAME


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def import_job(session: Session, image_id: str | None) -> Job | None:
    """The newest import job of the image (an upload's, while the image is importing)."""
    if image_id is None:
        return None
    return session.exec(
        select(Job).where(Job.image_id == image_id, Job.kind == IMPORT_KIND).order_by(col(Job.id).desc())
    ).first()


def arrived(job: Job | None) -> bool:
    """Whether every byte of the upload arrived: its job left `waiting` for the queue. A worker claims
    only queued jobs, so a failed job that was claimed (`attempts`) failed in the import, after the
    upload; one never claimed was cancelled or expired while it waited."""
    if job is None or job.state == jobs.WAITING:
        return False
    return job.state not in (jobs.FAILED, jobs.CANCELLED) or job.attempts > 0


def state_of(link: Link, image: Image | None, job: Job | None, now: datetime) -> str:
    """An upload link's state, before the checks it shares with download links (tenant, maker).

    `uploaded` once every byte is in (whatever the import makes of them); `expired` or `revoked`
    before that; `image_unavailable` when the import ended otherwise (failed, cancelled)."""
    if arrived(job):
        return LinkState.UPLOADED
    if link.revoked_at is not None:
        return LinkState.REVOKED
    if _aware(link.expires_at) <= now:
        return LinkState.EXPIRED
    if image is None or image.status != Status.IMPORTING or job is None or job.state != jobs.WAITING:
        return LinkState.IMAGE_UNAVAILABLE
    return LinkState.ACTIVE


def receiving_of(link: Link, job: Job) -> Receiving:
    assert link.image_id is not None and link.tenant_id is not None and job.id is not None
    return Receiving(link.id, link.image_id, link.tenant_id, job.id, int(link.size or 0), _aware(link.expires_at))


def waiting(catalog: Catalog, job_id: int) -> bool:
    """Whether the upload's import still waits for bytes (not complete, cancelled or expired)."""
    with db.read_session(catalog.engine) as session:
        job = session.get(Job, job_id)
        return job is not None and job.state == jobs.WAITING


def bytes_received(catalog: Catalog, link: Link, job: Job | None) -> int:
    """What has arrived: the staged bytes while the upload is open, all of them once it is complete."""
    if job is not None and job.state == jobs.WAITING and link.image_id is not None:
        try:
            return (catalog.store.import_staging(link.image_id) / SOURCE_NAME).stat().st_size
        except OSError:
            return 0
    if arrived(job):
        return int(link.size or 0)
    return int(job.bytes_done or 0) if job is not None else 0


# ---- the upload's progress and end ---------------------------------------------------------------


def record_progress(catalog: Catalog, job_id: int, received: int, size: int) -> None:
    """Store the bytes received so far on the waiting job (the listing's `uploading 43%`)."""
    with db.write_session(catalog.engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.state != jobs.WAITING:
            return
        job.phase = Phase.UPLOADING if received else Phase.WAITING_FOR_UPLOAD
        job.bytes_done = received
        job.bytes_total = size
        job.updated_at = job.progress_at = utcnow()
        session.add(job)


def complete(catalog: Catalog, receiving: Receiving, protocol: str, peer: str) -> bool:
    """Every byte is in: record it for the import job (which hashes it) and queue the job. False when the upload may no
    longer end this way (revoked, expired or cancelled meanwhile); its bytes are then left to
    the path that ended it."""
    folder = catalog.store.import_staging(receiving.image_id)
    summary = folder / SUMMARY_NAME
    with db.write_session(catalog.engine) as session:
        link = session.get(Link, receiving.link_id)
        job = session.get(Job, receiving.job_id)
        image = session.get(Image, receiving.image_id)
        if link is None or job is None or state_of(link, image, job, utcnow()) != LinkState.ACTIVE:
            return False
        partial = folder / (SUMMARY_NAME + ".tmp")
        partial.write_text(json.dumps({"size": receiving.size}))
        os.replace(partial, summary)
        job.state = jobs.QUEUED
        job.phase = Phase.VERIFYING
        job.bytes_done = job.bytes_total = receiving.size
        job.updated_at = job.progress_at = utcnow()
        session.add(job)
        audit.record(
            session,
            "imagehub gateway",
            "upload.finish",
            receiving.image_id,
            link=receiving.link_id,
            protocol=protocol,
            peer=peer,
            bytes=receiving.size,
        )
    return True


def end_in_session(session: Session, link: Link, reason: Msg, actor: str, now: datetime | None = None) -> bool:
    """Fail the upload behind `link` (job failed, image `import_failed` with `reason`) in the caller's
    transaction; False when it is no longer waiting for bytes. The caller removes the staged bytes
    (`remove_staged`) once committed."""
    job = import_job(session, link.image_id)
    if job is None or job.state != jobs.WAITING:
        return False
    now = now or utcnow()
    job.state = jobs.FAILED
    job.error = str(reason)
    job.finished_at = job.updated_at = now
    session.add(job)
    record_import_failed(session, link.image_id, str(reason), outcome=jobs.FAILED, actor=actor)
    return True


def remove_staged(catalog: Catalog, image_id: str | None) -> None:
    """The staged bytes of an upload that ended without completing (idempotent)."""
    if image_id is not None:
        shutil.rmtree(catalog.store.import_staging(image_id), ignore_errors=True)


def sweep(catalog: Catalog) -> list[str]:
    """End the uploads whose link expired (or was revoked by an account's deletion) before their last
    byte: `import_failed`, staged bytes removed. Run by the worker's sweep; the images ended."""
    now = utcnow()
    ended: list[tuple[str, Msg]] = []
    with db.read_session(catalog.engine) as session:
        statement = (
            select(Link, Job)
            .join(Job, col(Job.image_id) == col(Link.image_id))
            .where(Link.kind == UPLOAD, Job.kind == IMPORT_KIND, Job.state == jobs.WAITING)
        )
        for link, _job in session.exec(statement):
            if link.revoked_at is not None:
                ended.append((link.id, CANCELLED))
            elif _aware(link.expires_at) <= now:
                ended.append((link.id, EXPIRED))
    done: list[str] = []
    for link_id, reason in ended:
        with db.write_session(catalog.engine) as session:
            row = session.get(Link, link_id)
            if row is None or not end_in_session(session, row, reason, "imagehub worker", now):
                continue
            action = "upload.cancel" if reason is CANCELLED else "upload.expire"
            audit.record(session, "imagehub worker", action, row.image_id, link=row.id)
            image_id = row.image_id
        remove_staged(catalog, image_id)
        if image_id is not None:
            done.append(image_id)
    return done
