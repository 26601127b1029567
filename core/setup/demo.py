"""Demo data for `imagehub init --demo`: a tenant with images in every status; those with a file are
imported for real through the import pipeline."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed, Msg
from core.catalog.models import Account, Image, Perm, Role, Status, Tenant
from core.catalog.stored_errors import detail_of
from core.disk import qemu
from core.images.images import GIB, new_image
from core.rules import lifecycle
from core.rules.access import Actor

DEMO_TENANT = "demo"
DEMO_OWNER = "demo-owner"
DEMO_VIEWER = "demo-viewer"


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
    error: str | None = None


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
    DemoImage("snapshot-app01", "captured from app01", "Linux", "CentOS", "7.4", "x86_64", 20, Status.CREATING),
    DemoImage(
        "broken-upload",
        "truncated VMDK",
        "Linux",
        "CentOS",
        "7.2",
        "x86_64",
        20,
        Status.IMPORT_FAILED,
        Msg("HTTP {status} from source", status=404),
    ),
    DemoImage("old-test", "retired test image", "Linux", "Ubuntu", "14.04", "x86_64", 20, Status.DELETED),
    DemoImage("win-2008", "end of life", "Windows", "Windows", "2008R2", "x86_64", 40, Status.DELETED),
)


def seed_demo(catalog: Catalog) -> list[str]:
    """Create the demo tenant, its accounts and images; returns the images created now.

    Idempotent and resumable: what exists already (by name) is left alone, so a second run
    changes nothing and a run that was interrupted is completed by the next.
    Images that have a file (available, and deleted ones in the recycle bin) are imported for real
    through the import pipeline, from small sparse qcow2 files made here; the others are registered
    in their status directly.
    """
    with db.write_session(catalog.engine) as session:
        tenant = session.exec(select(Tenant).where(Tenant.name == DEMO_TENANT)).first()
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
        actor = Actor(owner.id, owner.name, owner.role, None, tenant.id)
        tenant_id = tenant.id
        existing = set(session.exec(select(Image.name).where(Image.tenant_id == tenant_id)))
    created: list[str] = []
    for spec in DEMO_IMAGES:
        if spec.name in existing:
            continue
        if spec.status in (Status.AVAILABLE, Status.DELETED):
            created.append(_import_demo_image(catalog, actor, spec))
            continue
        with db.write_session(catalog.engine) as session:
            image = new_image(
                session,
                actor,
                tenant_id,
                name=spec.name,
                description=spec.description,
                os_type=spec.os_type,
                platform=spec.platform,
                os_version=spec.os_version,
                arch=spec.arch,
                status=spec.status,
                target_size_gb=spec.size_gb,
                source="demo",
            )
            image.error = spec.error
            image.error_detail = detail_of(spec.error)
            audit.record(session, "imagehub init", "image.register", image.id, status=spec.status, demo=True)
            created.append(image.id)
    return created


def _import_demo_image(catalog: Catalog, actor: Actor, spec: DemoImage) -> str:
    """Import one demo image for real (a 1 GiB sparse qcow2 with an MBR, grown to its target size)."""
    from core.importer.diskprobe import mbr
    from core.importer.submit import submit_import
    from core.jobs.worker import SingleJobWorker

    catalog.store.ensure()
    with tempfile.TemporaryDirectory(dir=catalog.store.staging_dir, prefix="demo-") as folder:
        blank = Path(folder) / f"{spec.name}.raw"
        with open(blank, "wb") as handle:  # an import requires a partition table, file system or boot sector
            handle.write(mbr(GIB))
            handle.truncate(GIB)
        source = Path(folder) / f"{spec.name}.qcow2"
        qemu.run_qemu_img(["convert", "-q", "-f", "raw", "-O", "qcow2", str(blank), str(source)], timeout=60)
        view = submit_import(
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
        worker = SingleJobWorker(catalog, view["job_id"], poll_seconds=0.02, label="demo")
        try:
            worker.run_until(view["job_id"], timeout=120)
        finally:
            worker.join()
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, view["id"])
        assert image is not None
        if image.status != Status.AVAILABLE:
            raise Failed(
                "demo image {spec_name} could not be imported: {image_error}",
                spec_name=spec.name,
                image_error=image.error,
            )
        if spec.status == Status.DELETED:  # deleted the ordinary way, without the audit of a user's delete
            lifecycle.transition(session, image, Status.DELETING, actor="imagehub init")
            lifecycle.transition(session, image, Status.DELETED, actor="imagehub init")
        audit.record(session, "imagehub init", "image.register", image.id, status=spec.status, demo=True)
        return image.id
