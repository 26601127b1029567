"""Demo data for `imagehub init --demo`: a tenant with images in every status, each what it says.

- `available` and `deleted` images are imported for real through the import pipeline (from small
  sparse disks made here), the deleted ones then moved to the recycle bin;
- the `importing` image is a real import job, queued: a sparse 2 GiB raw disk in staging, large
  enough that its progress is seen; the worker of `imagehub serve` (or the TUI's) takes it to
  `available`;
- the `creating` image is a real capture job, queued, of a VM made (not started) from a demo image;
- the `import_failed` image is a real import of a truncated VMDK: the pipeline's own refusal is its reason.

Seeding happens once: its start and its end are recorded in the audit trail (`demo.seed`,
`demo.seeded`); a run after the end creates nothing, so an image the user destroyed stays
destroyed. A run that was interrupted (started, not ended) is completed by the next.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed
from core.catalog.models import Account, AuditEvent, Image, Perm, Role, Status, Tenant
from core.disk import qemu
from core.images.images import GIB
from core.rules import lifecycle
from core.rules.access import Actor
from core.rules.display import status_word

DEMO_TENANT = "demo"
DEMO_OWNER = "demo-owner"
DEMO_VIEWER = "demo-viewer"
DEMO_VM = "app01"
SEED_STARTED = "demo.seed"  # audit actions marking the one seeding of a catalog
SEED_DONE = "demo.seeded"
ACTOR = "imagehub init"
IMPORTING_SOURCE_BYTES = 2 * GIB  # read, hashed and copied by the worker: seconds of visible progress
DEMO_FOLDER = "demo"  # under staging: the queued import's source (internal files live in staging)


@dataclass(frozen=True)
class DemoImage:
    name: str
    description: str
    os_type: str
    platform: str
    os_version: str
    arch: str
    size_gb: int
    status: str


DEMO_IMAGES = (
    DemoImage("web-frontend", "nginx + app, hardened", "Linux", "CentOS", "7.9", "x86_64", 20, Status.AVAILABLE),
    DemoImage("db-primary", "PostgreSQL 9.6 host", "Linux", "CentOS", "7.6", "x86_64", 40, Status.AVAILABLE),
    DemoImage("legacy-erp", "CentOS 6 ERP server", "Linux", "CentOS", "6.10", "x86_64", 30, Status.AVAILABLE),
    DemoImage("arm-build", "aarch64 build agent", "Linux", "CentOS", "7.8", "aarch64", 20, Status.AVAILABLE),
    DemoImage("ubuntu-base", "Ubuntu 16.04 golden image", "Linux", "Ubuntu", "16.04", "x86_64", 20, Status.AVAILABLE),
    DemoImage("ubuntu-arm", "Ubuntu 18.04 for ARM hosts", "Linux", "Ubuntu", "18.04", "aarch64", 25, Status.AVAILABLE),
    DemoImage(
        "win-ad", "Windows 2012R2 domain controller", "Windows", "Windows", "2012R2", "x86_64", 60, Status.AVAILABLE
    ),
    DemoImage("win-iis", "Windows 2016 with IIS", "Windows", "Windows", "2016", "x86_64", 50, Status.IMPORTING),
    DemoImage("snapshot-app01", "captured from app01", "Linux", "CentOS", "6.10", "x86_64", 30, Status.CREATING),
    DemoImage("broken-upload", "truncated VMDK", "Linux", "CentOS", "7.2", "x86_64", 20, Status.IMPORT_FAILED),
    DemoImage("old-test", "retired test image", "Linux", "Ubuntu", "14.04", "x86_64", 20, Status.DELETED),
    DemoImage("win-2008", "end of life", "Windows", "Windows", "2008R2", "x86_64", 40, Status.DELETED),
)
CAPTURED_FROM = "legacy-erp"  # the image the demo VM app01 is made from (it cannot be deleted while app01 exists)


def seed_demo(catalog: Catalog) -> list[str]:
    """Create the demo tenant, its accounts and images, once; returns the images created now."""
    started = _start_seeding(catalog)
    if started is None:
        return []
    actor, tenant_id = started
    with db.read_session(catalog.engine) as session:
        existing = {image.name: image.id for image in session.exec(select(Image).where(Image.tenant_id == tenant_id))}
    created: list[str] = []
    for spec in DEMO_IMAGES:
        if spec.name in existing:
            continue
        image_id = _seed_image(catalog, actor, spec, existing)
        existing[spec.name] = image_id
        created.append(image_id)
    with db.write_session(catalog.engine) as session:
        audit.record(session, ACTOR, SEED_DONE, DEMO_TENANT, images=len(existing))
    return created


def _recorded(session: Session, action: str) -> bool:
    return session.exec(select(AuditEvent.id).where(AuditEvent.action == action).limit(1)).first() is not None


def _has_images(session: Session, tenant: Tenant) -> bool:
    return session.exec(select(Image.id).where(Image.tenant_id == tenant.id).limit(1)).first() is not None


def _start_seeding(catalog: Catalog) -> tuple[Actor, int] | None:
    """The demo owner and tenant (made now if missing), or None when the demo was seeded already.

    A demo tenant with images but no record of a seeding was made by an older imagehub: it counts as
    seeded (its images may have been destroyed since)."""
    with db.write_session(catalog.engine) as session:
        if _recorded(session, SEED_DONE):
            return None
        tenant = session.exec(select(Tenant).where(Tenant.name == DEMO_TENANT)).first()
        if not _recorded(session, SEED_STARTED):
            if tenant is not None and _has_images(session, tenant):
                audit.record(session, ACTOR, SEED_DONE, DEMO_TENANT, legacy=True)
                return None
            audit.record(session, ACTOR, SEED_STARTED, DEMO_TENANT)
        if tenant is None:
            tenant = Tenant(name=DEMO_TENANT)
            session.add(tenant)
            session.flush()
        assert tenant.id is not None
        owner = session.exec(select(Account).where(Account.name == DEMO_OWNER)).first()
        if owner is None:
            owner = Account(name=DEMO_OWNER, tenant_id=tenant.id, role=Role.OWNER)
            session.add(owner)
        if session.exec(select(Account).where(Account.name == DEMO_VIEWER)).first() is None:
            session.add(Account(name=DEMO_VIEWER, tenant_id=tenant.id, role=Role.MEMBER, perm=Perm.VIEW))
        session.flush()
        assert owner.id is not None
        return Actor(owner.id, owner.name, owner.role, None, tenant.id), tenant.id


def _seed_image(catalog: Catalog, actor: Actor, spec: DemoImage, existing: dict[str, str]) -> str:
    if spec.status == Status.IMPORTING:
        return _queue_import(catalog, actor, spec)
    if spec.status == Status.CREATING:
        return _queue_capture(catalog, actor, spec, existing[CAPTURED_FROM])
    if spec.status == Status.IMPORT_FAILED:
        return _failed_import(catalog, actor, spec)
    return _imported(catalog, actor, spec)


def _blank_disk(path: Path, size: int) -> None:
    """A sparse raw disk of `size` bytes with an MBR (an import requires a partition table, file
    system or boot sector)."""
    from core.importer.diskprobe import mbr

    with open(path, "wb") as handle:
        handle.write(mbr(size))
        handle.truncate(size)


def _submit(catalog: Catalog, actor: Actor, spec: DemoImage, source: Path) -> dict[str, object]:
    from core.importer.submit import submit_import

    return submit_import(
        catalog,
        actor,
        name=spec.name,
        description=spec.description,
        file=source,
        os_type=spec.os_type,
        platform=spec.platform,
        arch=spec.arch,
        os_version=spec.os_version,
        size_gb=spec.size_gb,
        internal_file=True,
    )


def _run_job(catalog: Catalog, job_id: int) -> None:
    from core.jobs.worker import SingleJobWorker

    worker = SingleJobWorker(catalog, job_id, poll_seconds=0.02, label="demo")
    try:
        worker.run_until(job_id, timeout=120)
    finally:
        worker.join()


def _ended_as(catalog: Catalog, spec: DemoImage, image_id: str, wanted: str) -> None:
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
    if image is None or image.status != wanted:
        raise Failed(
            "demo image {spec_name} ended {image_status} instead of {wanted_status}: {image_error}",
            spec_name=spec.name,
            image_status=status_word(image.status) if image else "gone",
            wanted_status=status_word(wanted),
            image_error=image.error if image else None,
        )


def _imported(catalog: Catalog, actor: Actor, spec: DemoImage) -> str:
    """An image imported for real from a 1 GiB sparse qcow2, then binned if the demo shows it deleted."""
    catalog.store.ensure()
    with tempfile.TemporaryDirectory(dir=catalog.store.staging_dir, prefix="demo-") as folder:
        blank = Path(folder) / f"{spec.name}.raw"
        _blank_disk(blank, GIB)
        source = Path(folder) / f"{spec.name}.qcow2"
        qemu.run_qemu_img(["convert", "-q", "-f", "raw", "-O", "qcow2", str(blank), str(source)], timeout=60)
        view = _submit(catalog, actor, spec, source)
        _run_job(catalog, int(str(view["job_id"])))
    image_id = str(view["id"])
    _ended_as(catalog, spec, image_id, Status.AVAILABLE)
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        if spec.status == Status.DELETED:  # deleted the ordinary way, without the audit of a user's delete
            lifecycle.transition(session, image, Status.DELETING, actor=ACTOR)
            lifecycle.transition(session, image, Status.DELETED, actor=ACTOR)
        audit.record(session, ACTOR, "image.register", image_id, status=spec.status, demo=True)
    return image_id


def _queue_import(catalog: Catalog, actor: Actor, spec: DemoImage) -> str:
    """A real import, left queued for the next worker: a sparse raw disk in staging/demo/."""
    catalog.store.ensure()
    folder = catalog.store.staging_dir / DEMO_FOLDER
    folder.mkdir(exist_ok=True)
    source = folder / f"{spec.name}.raw"
    source.unlink(missing_ok=True)
    _blank_disk(source, IMPORTING_SOURCE_BYTES)
    return str(_submit(catalog, actor, spec, source)["id"])


def _queue_capture(catalog: Catalog, actor: Actor, spec: DemoImage, base_image_id: str) -> str:
    """A real capture, left queued for the next worker, of a VM made (not started) from a demo image."""
    from core.compute.capture import submit_capture
    from core.compute.vms import create_vm

    password = "Demo-" + secrets.token_urlsafe(12)  # nobody logs in: the VM boots no system
    vm = create_vm(catalog, actor, base_image_id, DEMO_VM, password, start=False)
    view = submit_capture(
        catalog,
        actor,
        vm["id"],
        spec.name,
        description=spec.description,
        os_type=spec.os_type,
        platform=spec.platform,
        arch=spec.arch,
        os_version=spec.os_version,
        size_gb=spec.size_gb,
    )
    return str(view["id"])


def _failed_import(catalog: Catalog, actor: Actor, spec: DemoImage) -> str:
    """A real import of a truncated VMDK, run now: the pipeline refuses it with its own reason."""
    catalog.store.ensure()
    with tempfile.TemporaryDirectory(dir=catalog.store.staging_dir, prefix="demo-") as folder:
        blank = Path(folder) / f"{spec.name}.raw"
        _blank_disk(blank, 64 << 20)
        with open(blank, "r+b") as handle:  # some data, so that the VMDK has clusters past its cut
            handle.seek(1 << 20)
            handle.write(os.urandom(8 << 20))
        source = Path(folder) / f"{spec.name}.vmdk"
        qemu.run_qemu_img(["convert", "-q", "-f", "raw", "-O", "vmdk", str(blank), str(source)], timeout=60)
        os.truncate(source, source.stat().st_size // 2)
        view = _submit(catalog, actor, spec, source)
        _run_job(catalog, int(str(view["job_id"])))
    image_id = str(view["id"])
    _ended_as(catalog, spec, image_id, Status.IMPORT_FAILED)
    return image_id
