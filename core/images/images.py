"""Image services: list, show, register, edit, delete to the recycle bin, restore, destroy.

Every function takes the caller as an `Actor`, checks access (core.rules.access) and status
(core.rules.lifecycle), writes the audit trail, and raises domain errors the faces map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import iso, utcnow
from core.catalog.errors import Conflict, ImagehubError, Invalid, Msg, NotFound
from core.catalog.ids import issue_id
from core.catalog.models import Image, Job, Link, Status, Tenant, Vm
from core.catalog.stored_errors import detail_of
from core.images.query import BATCH as BATCH
from core.images.query import SORTABLE as SORTABLE
from core.images.query import ImageQuery as ImageQuery
from core.images.query import count_sql, listing_sql
from core.images.views import row_view as row_view
from core.images.views import shown_source as shown_source
from core.jobs import jobs
from core.rules import access, lifecycle
from core.rules.access import Actor
from core.rules.lifecycle import Operation
from core.rules.validation import check_description, check_name

GIB = 1024**3


def os_name(image: Image) -> str:
    return f"{image.platform} {image.os_version} {image.arch}"


def image_view(image: Image, tenant_name: str) -> dict[str, Any]:
    """The image as the contract's JSON object (one loaded row; the same function as listings)."""
    return row_view(
        (
            image.id,
            image.name,
            image.description,
            tenant_name,
            image.os_type,
            image.platform,
            image.os_version,
            image.arch,
            image.status,
            image.error,
            image.error_detail,
            image.disk_format,
            image.virtual_size,
            image.target_size_gb,
            image.sha256,
            image.source,
            image.created_at,
            image.updated_at,
            image.deleted_at,
        )
    )


def tenant_id_by_name(session: Session, name: str) -> int:
    tenant = session.exec(select(Tenant).where(Tenant.name == name)).first()
    if tenant is None or tenant.id is None:
        raise NotFound("tenant {name} not found", name=name)
    return tenant.id


def list_images(catalog: Catalog, actor: Actor, query: ImageQuery | None = None) -> list[dict[str, Any]]:
    return list(iter_images(catalog, actor, query))


def iter_images(catalog: Catalog, actor: Actor, query: ImageQuery | None = None) -> Iterator[dict[str, Any]]:
    """The views of the images `actor` may see, streamed in batches (a refused query raises at the first `next`)."""
    for rows in _row_batches(catalog, actor, query):
        yield from map(row_view, rows)


def _row_batches(catalog: Catalog, actor: Actor, query: ImageQuery | None) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows of the listing query (core.images.query), `BATCH` at a time (no ORM object per row)."""
    with db.read_session(catalog.engine) as session:
        connection = session.connection()
        sql, params = listing_sql(connection.dialect.name, db.rows_in(session), actor, query or ImageQuery())
        statement = sqlalchemy.text(sql).execution_options(stream_results=True)  # PostgreSQL: a server-side cursor
        # the size given here: a Core result ignores the yield_per execution option and partitions() would
        # then fetch every row at once (1.4 GB at 1,000,000 images)
        yield from connection.execute(statement, params).partitions(BATCH)


def count_images(catalog: Catalog, actor: Actor, query: ImageQuery | None = None) -> int:
    with db.read_session(catalog.engine) as session:
        sql, params = count_sql(db.rows_in(session), actor, query or ImageQuery())
        return int(session.connection().execute(sqlalchemy.text(sql), params).scalar_one())


def _load(session: Session, actor: Actor, image_id: str) -> Image:
    return access.load_visible(session, actor, Image, image_id)


def load_for(session: Session, actor: Actor, image_id: str, operation: Operation) -> Image:
    """The image, if the actor sees it (else NotFound), may change it (else Forbidden), and its status
    allows `operation` (else Conflict): the three checks of every change, in this order."""
    image = _load(session, actor, image_id)
    access.require_manage(actor, image.tenant_id, Msg("image {image_id}", image_id=image_id))
    lifecycle.require(image_id, image.status, operation)
    return image


def _tenant_name(session: Session, tenant_id: int) -> str:
    tenant = session.get(Tenant, tenant_id)
    return tenant.name if tenant else ""


def get_image(catalog: Catalog, actor: Actor, image_id: str) -> dict[str, Any]:
    with db.read_session(catalog.engine) as session:
        image = _load(session, actor, image_id)
        view = image_view(image, _tenant_name(session, image.tenant_id))
        view["vms"] = [vm.id for vm in session.exec(select(Vm).where(Vm.image_id == image_id).order_by(Vm.id))]
        job = session.exec(select(Job).where(Job.image_id == image_id).order_by(col(Job.id).desc())).first()
        view["progress"] = job_progress(job) if job is not None and job.state in jobs.ACTIVE_STATES else None
        return view


def job_progress(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "phase": job.phase,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "rate": job.rate,
        "updated_at": iso(job.updated_at),
    }


def resolve_tenant_for_create(session: Session, actor: Actor, tenant: str | None) -> int:
    """The tenant a new resource goes to: the named one (admins) or the caller's own."""
    if tenant:
        tenant_id = tenant_id_by_name(session, tenant)
        access.require_manage(actor, tenant_id, Msg("tenant {tenant}", tenant=tenant))
        return tenant_id
    if actor.tenant_id is None:
        raise Invalid("--tenant is required for platform admins")
    access.require_manage(actor, actor.tenant_id, Msg("this tenant"))
    return actor.tenant_id


def new_image(
    session: Session,
    actor: Actor,
    tenant_id: int,
    *,
    name: str,
    description: str,
    os_type: str,
    platform: str,
    os_version: str,
    arch: str,
    status: str,
    target_size_gb: int,
    sha256: str | None = None,
    source: str | None = None,
    disk_format: str | None = None,
    virtual_size: int | None = None,
    source_vm_id: str | None = None,
) -> Image:
    """Add a new image row (already validated) in the caller's transaction."""
    image = Image(
        id=issue_id(session, "img"),
        name=name,
        description=description,
        tenant_id=tenant_id,
        os_type=os_type,
        platform=platform,
        os_version=os_version,
        arch=arch,
        status=status,
        target_size_gb=target_size_gb,
        sha256=sha256,
        source=source,
        disk_format=disk_format,
        virtual_size=virtual_size,
        source_vm_id=source_vm_id,
        created_by=actor.name,
    )
    session.add(image)
    session.flush()
    return image


def record_import_failed(
    session: Session, image_id: str | None, reason: str, *, outcome: str, actor: str = "imagehub worker"
) -> None:
    """importing -> import_failed with the reason, inside the caller's transaction (a no-op for an image
    that is no longer importing). `outcome`: the audit outcome, the ended job's state."""
    if image_id is None:
        return
    image = session.get(Image, image_id)
    if image is None or image.status != Status.IMPORTING:
        return
    image.error = reason
    image.error_detail = detail_of(reason)
    lifecycle.transition(
        session, image, Status.IMPORT_FAILED, actor=actor, action="image.import", outcome=outcome, reason=reason
    )


def edit_image(
    catalog: Catalog, actor: Actor, image_id: str, *, name: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """Rename and/or change the remark; allowed in every status."""
    if name is None and description is None:
        raise Invalid("nothing to change: give --name and/or --description")
    try:
        with db.write_session(catalog.engine) as session:
            image = load_for(session, actor, image_id, Operation.EDIT)
            changes: dict[str, Any] = {}
            if name is not None:
                changes["name"] = [image.name, check_name(name)]
                image.name = changes["name"][1]
            if description is not None:
                changes["description"] = [image.description, check_description(description)]
                image.description = changes["description"][1]
            image.updated_at = utcnow()
            session.add(image)
            audit.record(session, actor.name, "image.edit", image_id, **changes)
            return image_view(image, _tenant_name(session, image.tenant_id))
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "image.edit", image_id, str(exc))
        raise


@dataclass(frozen=True)
class BatchResult:
    id: str
    ok: bool
    status: str | None = None
    error: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "status": self.status, "error": self.error}


def _batch(
    catalog: Catalog, actor: Actor, ids: Iterable[str], action: str, one: Callable[[str], str]
) -> list[BatchResult]:
    """Run `one` on each ID on its own; a refusal is reported and does not stop the others."""
    results: list[BatchResult] = []
    for image_id in dict.fromkeys(ids):
        try:
            results.append(BatchResult(image_id, True, status=one(image_id)))
        except ImagehubError as exc:
            audit.record_refusal(catalog.engine, actor.name, action, image_id, str(exc))
            results.append(BatchResult(image_id, False, error=exc.message, exit_code=exc.exit_code))
    return results


def _check_not_in_use(session: Session, image_id: str) -> None:
    vm_ids = [vm.id for vm in session.exec(select(Vm).where(Vm.image_id == image_id).order_by(Vm.id))]
    if vm_ids:
        raise Conflict("image {image_id} is used by {vm_ids}", image_id=image_id, vm_ids=", ".join(vm_ids))


def delete_images(catalog: Catalog, actor: Actor, ids: Iterable[str]) -> list[BatchResult]:
    """Move images to the recycle bin: available/import_failed -> deleting -> deleted."""

    def one(image_id: str) -> str:
        with db.write_session(catalog.engine) as session:
            image = load_for(session, actor, image_id, Operation.DELETE)
            _check_not_in_use(session, image_id)
            lifecycle.transition(session, image, Status.DELETING, actor=actor.name)
        finish_deletion(catalog, image_id, actor.name)
        return Status.DELETED

    return _batch(catalog, actor, ids, "image.delete", one)


def finish_deletion(catalog: Catalog, image_id: str, actor_name: str) -> None:
    """deleting -> deleted: revoke its links, drop queued work, then into the recycle bin."""
    now = utcnow()
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        if image is None or image.status != Status.DELETING:
            return
        for link in session.exec(select(Link).where(Link.image_id == image_id, col(Link.revoked_at).is_(None))):
            link.revoked_at = now
            session.add(link)
        for job in session.exec(select(Job).where(Job.image_id == image_id, col(Job.state).in_(jobs.ACTIVE_STATES))):
            jobs.cancel(session, job, now)
        lifecycle.transition(
            session,
            image,
            Status.DELETED,
            actor=actor_name,
            action="image.delete",
            now=now,
            previous=image.status_before_delete,
        )


def finish_pending_deletions(catalog: Catalog) -> list[str]:
    """Finish deletions a dead process left in `deleting` (run by the worker's sweep)."""
    with db.read_session(catalog.engine) as session:
        pending = list(session.exec(select(Image.id).where(Image.status == Status.DELETING)))
    for image_id in pending:
        finish_deletion(catalog, image_id, "imagehub worker")
    return pending


def restore_images(catalog: Catalog, actor: Actor, ids: Iterable[str]) -> list[BatchResult]:
    """Out of the recycle bin, back to the status the image had before deletion."""

    def one(image_id: str) -> str:
        with db.write_session(catalog.engine) as session:
            image = load_for(session, actor, image_id, Operation.RESTORE)
            restored = Status(image.status_before_delete or Status.AVAILABLE)
            lifecycle.transition(session, image, restored, actor=actor.name, action="image.restore", status=restored)
            return restored

    return _batch(catalog, actor, ids, "image.restore", one)


def destroy_images(catalog: Catalog, actor: Actor, ids: Iterable[str]) -> list[BatchResult]:
    """Remove images in the recycle bin for good: files, links, jobs and row (the audit trail stays)."""

    def one(image_id: str) -> str:
        with db.write_session(catalog.engine) as session:
            image = load_for(session, actor, image_id, Operation.DESTROY)
            _check_not_in_use(session, image_id)
            for link in session.exec(select(Link).where(Link.image_id == image_id)):
                session.delete(link)
            for job in session.exec(select(Job).where(Job.image_id == image_id)):
                session.delete(job)
            session.delete(image)
            audit.record(session, actor.name, "image.destroy", image_id, name=image.name)
            # Files go last, inside the transaction: if removing them fails, the row stays.
            catalog.store.remove_image_files(image_id)
        return "destroyed"

    return _batch(catalog, actor, ids, "image.destroy", one)
