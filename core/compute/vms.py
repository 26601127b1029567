"""VMs made from images: create (overlay disk + password seed), list, start, stop, delete.

A VM's disk is a qcow2 overlay backed by its image (copy-on-write), grown to the image's target
size; its new admin password reaches the guest on a cloud-init NoCloud seed (core.compute.seed). Both live
in the VM's own folder `<data_dir>/vms/<vm-id>/` (0700). An image with any VM made from it cannot
be deleted (core.images.images). The compute driver (core.compute.drivers) recorded on each VM runs it.

The password is checked, written to the seed and forgotten: never in the catalog, audit or logs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import iso, utcnow
from core.catalog.errors import Conflict, Failed, ImagehubError, Msg, NotFound
from core.catalog.ids import issue_id
from core.catalog.models import Image, Status, Tenant, Vm
from core.compute.drivers import CONSOLE_LOG, RUNNING, STOPPED, Driver, MachineSpec, driver_for, get_driver
from core.compute.drivers import DEFINED as DEFINED
from core.compute.seed import check_password, hostname_for, seed_data, write_seed_iso
from core.disk import qemu
from core.images.images import GIB, load_for
from core.rules import access
from core.rules.access import Actor
from core.rules.lifecycle import Operation
from core.rules.validation import check_name

log = logging.getLogger("imagehub.vms")


def vm_view(vm: Vm, tenant_name: str = "") -> dict[str, Any]:
    """The VM as the contract's JSON object. A VM of the `none` driver is `defined`, whatever an
    older version recorded: nothing runs it."""
    return {
        "id": vm.id,
        "name": vm.name,
        "image_id": vm.image_id,
        "status": DEFINED if vm.driver == "none" else vm.status,
        "tenant": tenant_name,
        "driver": vm.driver,
        "arch": vm.arch,
        "created_by": vm.created_by,
        "created_at": iso(vm.created_at),
        "updated_at": iso(vm.updated_at),
    }


def vm_folder(catalog: Catalog, vm_id: str) -> Path:
    return catalog.store.vms_dir / vm_id


def machine_spec(catalog: Catalog, vm: Vm) -> MachineSpec:
    return MachineSpec(vm.id, vm.arch, vm_folder(catalog, vm.id), vm.status)


def driver_of(catalog: Catalog, vm: Vm) -> Driver:
    return get_driver(vm.driver, catalog.settings.compute)


def _load(session: Session, actor: Actor, vm_id: str) -> Vm:
    return access.load_visible(session, actor, Vm, vm_id)


def _tenant_name(session: Session, tenant_id: int) -> str:
    tenant = session.get(Tenant, tenant_id)
    return tenant.name if tenant else ""


def capture_in_progress(session: Session, vm_id: str) -> str | None:
    """The image being captured from the VM (status creating), if any: the VM must stay stopped."""
    image = session.exec(
        select(Image).where(Image.source_vm_id == vm_id, Image.status == Status.CREATING).order_by(col(Image.id))
    ).first()
    return image.id if image is not None else None


# ---- create ---------------------------------------------------------------------------------


def _make_disk_and_seed(catalog: Catalog, image: Image, vm_id: str, hostname: str, password: str) -> Path:
    """The VM's folder with its overlay and seed; removed again if anything fails."""
    fmt = image.disk_format or "raw"
    base = catalog.store.image_path(image.id, fmt)
    if not base.is_file():
        raise Failed(
            "image {image_id} has no file in the store ({base_name} is missing)", image_id=image.id, base_name=base.name
        )
    folder = vm_folder(catalog, vm_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    try:
        spec = MachineSpec(vm_id, image.arch, folder)
        size = max(image.target_size_gb * GIB, image.virtual_size or 0)
        qemu.create(spec.disk, "qcow2", size, extra=["-b", str(base.resolve()), "-F", fmt])
        write_seed_iso(spec.seed, seed_data(vm_id, hostname, password, image.os_type))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def create_vm(
    catalog: Catalog, actor: Actor, image_id: str, name: str, password: str, *, start: bool = True
) -> dict[str, Any]:
    """Make a VM from an available image the caller may manage, with a new admin password.

    Returns the VM's view (id, name, image_id, status, created_at...). With `start`, the VM is
    started (qemu driver; under the none driver it is `defined`: nothing runs it); if it cannot
    start, nothing is left behind and Failed says why.
    """
    folder: Path | None = None
    vm_id = None
    try:
        name = check_name(name)
        with db.write_session(catalog.engine) as session:
            image = load_for(session, actor, image_id, Operation.CREATE_VM)
            if image.disk_format == "iso":
                raise Conflict(
                    "image {image_id} is an ISO (installation media); a VM boots from a disk image", image_id=image_id
                )
            check_password(password, image.os_type)
            driver = driver_for(catalog.settings.compute, image.arch)
            vm_id = issue_id(session, "vm")
            folder = _make_disk_and_seed(catalog, image, vm_id, hostname_for(name, vm_id), password)
            vm = Vm(
                id=vm_id,
                name=name,
                tenant_id=image.tenant_id,
                image_id=image.id,
                status=DEFINED if driver == "none" else STOPPED,
                driver=driver,
                arch=image.arch,
                created_by=actor.name,
            )
            session.add(vm)
            audit.record(session, actor.name, "vm.create", vm_id, image=image.id, name=name, driver=driver)
            session.flush()
            view = vm_view(vm, _tenant_name(session, vm.tenant_id))
    except ImagehubError as exc:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        audit.record_refusal(catalog.engine, actor.name, "vm.create", image_id, str(exc))
        raise
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("vm %s created from %s by %s (driver %s)", vm_id, image_id, actor.name, driver)
    if not start or driver == "none":  # nothing can run it here: it stays defined
        return view
    try:
        return start_vm(catalog, actor, view["id"])
    except ImagehubError as exc:
        _remove(catalog, view["id"], actor.name, reason=f"could not start: {exc}")
        raise Failed(
            "vm {vm_id} could not be started, so it was not created: {exc}", vm_id=view["id"], exc=exc
        ) from exc


# ---- list -----------------------------------------------------------------------------------


def list_vms(catalog: Catalog, actor: Actor, image_id: str | None = None) -> list[dict[str, Any]]:
    """The VMs the caller may see (of one image if given), newest first, status refreshed."""
    with db.read_session(catalog.engine) as session:
        statement = select(Vm, Tenant.name).join(Tenant, col(Vm.tenant_id) == col(Tenant.id))
        if image_id is not None:
            access.load_visible(session, actor, Image, image_id)
            statement = statement.where(Vm.image_id == image_id)
        visible = access.visible_tenant_ids(actor)
        if visible is not None:
            statement = statement.where(col(Vm.tenant_id).in_(visible))
        rows = list(session.exec(statement.order_by(col(Vm.created_at).desc(), col(Vm.id).desc())))
    views = []
    for vm, tenant_name in rows:
        refresh_status(catalog, vm)
        views.append(vm_view(vm, tenant_name))
    return views


def vms_of_image(catalog: Catalog, actor: Actor, image_id: str) -> list[dict[str, Any]]:
    """The VMs made from one image (for the TUI's detail view)."""
    return list_vms(catalog, actor, image_id=image_id)


def get_vm(catalog: Catalog, actor: Actor, vm_id: str) -> dict[str, Any]:
    with db.read_session(catalog.engine) as session:
        vm = _load(session, actor, vm_id)
        tenant_name = _tenant_name(session, vm.tenant_id)
    refresh_status(catalog, vm)
    return vm_view(vm, tenant_name)


def at_rest(vm: Vm) -> bool:
    """Nothing runs the VM's disk (stopped, or only defined): it may be captured."""
    return vm.driver == "none" or vm.status == STOPPED


def refuse_undriven(vm: Vm) -> None:
    """A VM of the `none` driver can be neither started nor stopped: nothing runs it here."""
    if vm.driver == "none":
        raise Conflict(
            "vm {vm_id} is only defined: no compute driver runs it (compute.driver was none, or qemu-system"
            " was not installed, when it was created); create it again where qemu runs",
            vm_id=vm.id,
        )


def refresh_status(catalog: Catalog, vm: Vm) -> None:
    """Bring the recorded status in line with the driver's (e.g. the guest powered itself off)."""
    if vm.driver == "none":
        vm.status = DEFINED
        return
    try:
        actual = driver_of(catalog, vm).status(machine_spec(catalog, vm))
    except ImagehubError:
        return
    if actual == vm.status:
        return
    with db.write_session(catalog.engine) as session:
        row = session.get(Vm, vm.id)
        if row is not None:
            row.status = actual
            row.updated_at = utcnow()
            session.add(row)
    vm.status = actual


# ---- console --------------------------------------------------------------------------------

CONSOLE_CHUNK = 1 << 20  # bytes of the console log read at once


class Console:
    """A VM's serial console log (what the guest printed: boot messages, the login prompt), read
    from any offset; `live` says whether the VM still runs (so more may come)."""

    def __init__(self, catalog: Catalog, vm: Vm) -> None:
        self.catalog = catalog
        self.vm = vm
        self.path = vm_folder(catalog, vm.id) / CONSOLE_LOG

    def read(self, offset: int = 0, limit: int = CONSOLE_CHUNK) -> bytes:
        """At most `limit` bytes from `offset` (none past the end, or before the VM first ran)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(max(0, offset))
                return handle.read(max(0, min(limit, CONSOLE_CHUNK)))
        except FileNotFoundError:
            return b""

    def live(self) -> bool:
        refresh_status(self.catalog, self.vm)
        return self.vm.status == RUNNING


def open_console(catalog: Catalog, actor: Actor, vm_id: str) -> Console:
    """The console of a VM the caller may manage (it may show what was typed at it: viewers may not)."""
    with db.read_session(catalog.engine) as session:
        vm = _load(session, actor, vm_id)
        access.require_manage(actor, vm.tenant_id, Msg("vm {vm_id}", vm_id=vm_id))
    if vm.driver == "none":
        raise Conflict("vm {vm_id} is only defined: it has never run, so it has no console", vm_id=vm_id)
    return Console(catalog, vm)


# ---- start / stop / delete ------------------------------------------------------------------


def start_vm(catalog: Catalog, actor: Actor, vm_id: str) -> dict[str, Any]:
    try:
        with db.read_session(catalog.engine) as session:
            vm = _load(session, actor, vm_id)
            access.require_manage(actor, vm.tenant_id, Msg("vm {vm_id}", vm_id=vm_id))
            capturing = capture_in_progress(session, vm_id)
            tenant_name = _tenant_name(session, vm.tenant_id)
        if capturing:
            raise Conflict(
                "vm {vm_id} is being captured into {capturing}; start it when that has ended",
                vm_id=vm_id,
                capturing=capturing,
            )
        refuse_undriven(vm)
        refresh_status(catalog, vm)
        if vm.status != STOPPED:
            raise Conflict("vm {vm_id} is already {vm_status}", vm_id=vm_id, vm_status=vm.status)
        pid = driver_of(catalog, vm).start(machine_spec(catalog, vm))
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "vm.start", vm_id, str(exc))
        raise
    with db.write_session(catalog.engine) as session:
        row = session.get(Vm, vm_id)
        if row is None:  # deleted meanwhile
            raise NotFound("vm {vm_id} not found", vm_id=vm_id)
        row.status = RUNNING
        row.pid = pid
        row.updated_at = utcnow()
        session.add(row)
        audit.record(session, actor.name, "vm.start", vm_id, pid=pid)
        view = vm_view(row, tenant_name)
    log.info("vm %s started (pid %s)", vm_id, pid)
    return view


def stop_vm(
    catalog: Catalog, actor: Actor, vm_id: str, *, force: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Power the VM off (ACPI, then a hard stop after the timeout; `force`: hard stop at once)."""
    try:
        with db.read_session(catalog.engine) as session:
            vm = _load(session, actor, vm_id)
            access.require_manage(actor, vm.tenant_id, Msg("vm {vm_id}", vm_id=vm_id))
            tenant_name = _tenant_name(session, vm.tenant_id)
        refuse_undriven(vm)
        refresh_status(catalog, vm)
        if vm.status == STOPPED:
            raise Conflict("vm {vm_id} is already stopped", vm_id=vm_id)
        driver_of(catalog, vm).stop(machine_spec(catalog, vm), force=force, timeout=timeout)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "vm.stop", vm_id, str(exc))
        raise
    with db.write_session(catalog.engine) as session:
        row = session.get(Vm, vm_id)
        if row is None:
            raise NotFound("vm {vm_id} not found", vm_id=vm_id)
        row.status = STOPPED
        row.pid = None
        row.updated_at = utcnow()
        session.add(row)
        audit.record(session, actor.name, "vm.stop", vm_id, force=force)
        view = vm_view(row, tenant_name)
    log.info("vm %s stopped", vm_id)
    return view


def delete_vm(catalog: Catalog, actor: Actor, vm_id: str) -> None:
    """Stop the VM (hard), remove its folder and its row; its image may then be deleted."""
    try:
        with db.read_session(catalog.engine) as session:
            vm = _load(session, actor, vm_id)
            access.require_manage(actor, vm.tenant_id, Msg("vm {vm_id}", vm_id=vm_id))
            capturing = capture_in_progress(session, vm_id)
        if capturing:
            raise Conflict(
                "vm {vm_id} is being captured into {capturing}; delete it when that has ended",
                vm_id=vm_id,
                capturing=capturing,
            )
        driver_of(catalog, vm).stop(machine_spec(catalog, vm), force=True)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "vm.delete", vm_id, str(exc))
        raise
    _remove(catalog, vm_id, actor.name)
    log.info("vm %s deleted", vm_id)


def _remove(catalog: Catalog, vm_id: str, actor_name: str, reason: str | None = None) -> None:
    """Drop the row and then the folder (a folder without a row is harmless; the reverse is not)."""
    with db.write_session(catalog.engine) as session:
        row = session.get(Vm, vm_id)
        if row is not None:
            session.delete(row)
            detail: dict[str, Any] = {"image": row.image_id}
            if reason:
                detail["reason"] = reason
            audit.record(session, actor_name, "vm.delete", vm_id, **detail)
    shutil.rmtree(vm_folder(catalog, vm_id), ignore_errors=True)
