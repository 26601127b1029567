"""Test data: images registered straight into the catalog in any status, with a real file if asked."""

from __future__ import annotations

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.models import Image, Status, Vm
from core.disk import qemu
from core.images.images import GIB, new_image
from core.rules.access import Actor


def make_image(
    catalog: Catalog,
    actor: Actor,
    status: str = Status.AVAILABLE,
    *,
    name: str = "img",
    tenant_id: int | None = None,
    with_file: bool = False,
    size_gb: int = 20,
) -> str:
    tenant = tenant_id if tenant_id is not None else actor.tenant_id
    assert tenant is not None
    with db.write_session(catalog.engine) as session:
        image = new_image(
            session,
            actor,
            tenant,
            name=name,
            description=f"{name} description",
            os_type="Linux",
            platform="CentOS",
            os_version="7.9",
            arch="x86_64",
            status=Status.DELETED if status == Status.DELETED else status,
            target_size_gb=size_gb,
            disk_format="raw" if with_file else None,
            virtual_size=size_gb * GIB if with_file else None,
        )
        if status == Status.DELETED:
            image.status_before_delete = Status.AVAILABLE
            image.deleted_at = utcnow()
        image_id = image.id
    if with_file:
        qemu.create(catalog.store.image_path(image_id, "raw"), "raw", size_gb * GIB)
    return image_id


def image_row(catalog: Catalog, image_id: str) -> Image | None:
    with db.read_session(catalog.engine) as session:
        return session.get(Image, image_id)


def attach_vm(catalog: Catalog, image_id: str, vm_id: str = "vm-test0001") -> str:
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        session.add(Vm(id=vm_id, name="vm", tenant_id=image.tenant_id, image_id=image_id))
    return vm_id
