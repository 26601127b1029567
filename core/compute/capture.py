"""Capture: make a new, independent image from a stopped VM (job kind "capture").

`submit_capture` checks the VM (visible, manageable, stopped, not already being captured) and the
OS fields (prefilled from the VM's image, checked against the OS matrix), then adds the image in
`creating` and queues the job in the same transaction. The job flattens the VM's overlay and its
base with `qemu-img convert -O raw` into staging, reporting progress, and publishes the file into
the store atomically; the image ends `available`. On failure the image ends `import_failed` with
the reason and nothing of it is left in the store. While the capture runs the VM cannot be started
or deleted (core.compute.vms).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict, Failed, ImagehubError, Msg
from core.catalog.models import Image, Job, Phase, Status, Tenant, Vm
from core.catalog.stored_errors import detail_of
from core.compute import vms
from core.disk import convert, qemu
from core.disk.convert import Limits
from core.images.images import GIB, image_view, new_image
from core.jobs import jobs
from core.jobs.context import JobContext, LeaseLost
from core.rules import access, lifecycle
from core.rules.access import Actor
from core.rules.validation import check_description, check_name, check_os, check_size_gb

log = logging.getLogger("imagehub.capture")

KIND = "capture"


def submit_capture(
    catalog: Catalog,
    actor: Actor,
    vm_id: str,
    name: str,
    *,
    description: str | None = None,
    os_type: str | None = None,
    platform: str | None = None,
    arch: str | None = None,
    os_version: str | None = None,
    size_gb: int | str | None = None,
) -> dict[str, Any]:
    """Start capturing VM `vm_id` into a new image; returns the image's view plus `job_id`."""
    try:
        name = check_name(name)
        description = check_description(description)
        with db.read_session(catalog.engine) as session:
            vm = access.load_visible(session, actor, Vm, vm_id)
            access.require_manage(actor, vm.tenant_id, Msg("vm {vm_id}", vm_id=vm_id))
        # The VM must really be stopped: ask its driver, not only the catalog.
        vms.refresh_status(catalog, vm)
        if not vms.at_rest(vm):
            raise Conflict(
                "vm {vm_id} is {vm_status}; stop it before capturing an image from it", vm_id=vm_id, vm_status=vm.status
            )
        overlay = vms.machine_spec(catalog, vm).disk
        if not overlay.is_file():
            raise Failed("vm {vm_id} has no disk ({overlay_name} is missing)", vm_id=vm_id, overlay_name=overlay.name)
        with db.write_session(catalog.engine) as session:
            vm = access.load_visible(session, actor, Vm, vm_id)  # deleted meanwhile: not found
            if not vms.at_rest(vm):
                raise Conflict(
                    "vm {vm_id} is {vm_status}; stop it before capturing an image from it",
                    vm_id=vm_id,
                    vm_status=vm.status,
                )
            busy = vms.capture_in_progress(session, vm_id)
            if busy:
                raise Conflict("vm {vm_id} is already being captured into {busy}", vm_id=vm_id, busy=busy)
            source = session.get(Image, vm.image_id)
            assert source is not None  # a VM's image cannot go while the VM exists
            choice = check_os(
                catalog.os_matrix,
                os_type or source.os_type,
                platform or source.platform,
                arch or source.arch,
                os_version or source.os_version,
            )
            limits = catalog.settings.images
            size = check_size_gb(
                size_gb if size_gb is not None else source.target_size_gb, limits.min_size_gb, limits.max_size_gb
            )
            image = new_image(
                session,
                actor,
                vm.tenant_id,
                name=name,
                description=description,
                os_type=choice.os_type,
                platform=choice.platform,
                os_version=choice.os_version,
                arch=choice.arch,
                status=Status.CREATING,
                target_size_gb=size,
                source=f"vm:{vm_id}",
                source_vm_id=vm_id,
            )
            job = jobs.submit(session, KIND, image.id, {"vm_id": vm_id})
            audit.record(session, actor.name, "image.capture", image.id, vm=vm_id, name=name, job=job.id)
            tenant = session.get(Tenant, vm.tenant_id)
            view = image_view(image, tenant.name if tenant else "")
            view["job_id"] = job.id
            return view
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "image.capture", vm_id, str(exc))
        raise


class CaptureHandler:
    """The worker side: flatten the overlay into a raw image, publish it, mark it available."""

    kind = KIND

    def run(self, ctx: JobContext) -> None:
        catalog = ctx.catalog
        image_id = ctx.job.image_id or ""
        vm_id = ctx.params.get("vm_id", "")
        with db.read_session(catalog.engine) as session:
            image = session.get(Image, image_id)
            vm = session.get(Vm, vm_id)
        if image is None or image.status != Status.CREATING:
            return  # nothing left to do (the image moved on meanwhile)
        if vm is None:
            raise Failed("vm {vm_id} no longer exists", vm_id=vm_id)
        overlay = vms.machine_spec(catalog, vm).disk
        if not overlay.is_file():
            raise Failed("vm {vm_id} has no disk ({overlay_name} is missing)", vm_id=vm_id, overlay_name=overlay.name)
        catalog.store.ensure()
        staged = catalog.store.staging_path(f"{image_id}.capture.raw")
        final = catalog.store.image_path(image_id, "raw")
        staged.unlink(missing_ok=True)
        ctx.progress(Phase.INSPECTING, force=True)
        total = int(qemu.info(overlay, "qcow2").get("virtual-size") or 0)
        try:
            self._convert(ctx, overlay, staged, total)
            wanted = image.target_size_gb * GIB
            if wanted > total:
                qemu.run_qemu_img(["resize", "-q", "-f", "raw", str(staged), str(wanted)], timeout=120)
            size = int(qemu.info(staged, "raw").get("virtual-size") or 0)
            ctx.progress(Phase.PUBLISHING, total, total, force=True)
            with db.write_session(catalog.engine) as session:
                row = session.get(Image, image_id)
                held = session.get(Job, ctx.job.id)
                if row is None or row.status != Status.CREATING or held is None or held.lease_owner != ctx.owner:
                    raise LeaseLost(f"capture of {image_id} was taken over")
                catalog.store.publish(staged, final)
                row.disk_format = "raw"
                row.virtual_size = size
                row.error = None
                row.error_detail = None
                lifecycle.transition(
                    session,
                    row,
                    Status.AVAILABLE,
                    actor="imagehub worker",
                    action="image.capture.done",
                    vm=vm_id,
                    size=size,
                )
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        log.info("captured vm %s into %s (%s bytes)", vm_id, image_id, size)

    @staticmethod
    def _convert(ctx: JobContext, overlay: Path, staged: Path, total: int) -> None:
        """`qemu-img convert -O raw` under import.convert_* limits (the time from the overlay's and its
        base's data), its percentage turned into progress; quiet spells renew the lease."""
        limits = Limits.of(ctx.catalog.settings.import_)
        backing = qemu.info(overlay, "qcow2").get("full-backing-filename")
        ctx.progress(Phase.CONVERTING, 0, total, force=True)
        convert.convert(
            overlay,
            "qcow2",
            staged,
            "raw",
            limits=limits,
            timeout=limits.seconds_for_files(overlay, *([Path(backing)] if backing else [])),
            on_progress=lambda fraction: ctx.progress(Phase.CONVERTING, int(total * fraction), total),
            heartbeat=ctx.heartbeat,
            heartbeat_seconds=1.0,
            scrub_paths=[ctx.catalog.store.data_dir],
        )

    def record_failure(self, session: Session, job: Job, reason: str) -> None:
        """The image ends import_failed with the reason, in the transaction that ends the job."""
        image = session.get(Image, job.image_id) if job.image_id else None
        if image is None or image.status != Status.CREATING:
            return
        image.error = reason
        image.error_detail = detail_of(reason)
        image.disk_format = None
        image.virtual_size = None
        lifecycle.transition(
            session, image, Status.IMPORT_FAILED, actor="imagehub worker", action="image.capture.failed", reason=reason
        )

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        """Nothing of a failed capture stays in the store."""
        if not job.image_id:
            return
        with db.write_session(catalog.engine) as session:
            self.record_failure(session, job, reason)  # a no-op once the worker's transaction did it
        with db.read_session(catalog.engine) as session:
            image = session.get(Image, job.image_id)
            if image is not None and image.status != Status.IMPORT_FAILED:
                return
        catalog.store.remove_image_files(job.image_id)
