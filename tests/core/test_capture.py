"""Capture: a stopped VM's overlay and base flattened into a new, independent raw image."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict, Forbidden, Invalid, NotFound
from core.catalog.models import Image, Job, Status
from core.compute import capture, vms
from core.images import images
from core.images.images import GIB
from core.jobs import jobs
from core.jobs.handlers import HANDLERS
from core.jobs.worker import Worker
from tests.conftest import BACKENDS, People
from tests.vmdata import BASE_PATTERN, MIB, make_base_image, qemu_io, read_at, sha256_of

PASSWORD = "Tr1cky-Pass!"
PATTERN = 0xC3
PATTERN_AT = 8 * MIB  # inside the base image's 32 MiB
BEYOND_AT = 1 * GIB  # past the base, in the space the overlay grew into


def stopped_vm(catalog: Catalog, people: People, image_id: str) -> dict:
    return vms.create_vm(catalog, people.owner, image_id, "app01", PASSWORD, start=False)


def run_job(catalog: Catalog, job_id: int) -> Job:
    worker = Worker(catalog, kinds=[capture.KIND], poll_seconds=0.05)
    try:
        job = worker.run_until(job_id, timeout=120)
    finally:
        worker.join()
    assert job is not None
    return job


def image_row(catalog: Catalog, image_id: str) -> Image:
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
    assert image is not None
    return image


def store_files(catalog: Catalog, image_id: str) -> list[Path]:
    return catalog.store.files_of_image(image_id)


def test_every_job_kind_has_its_handler_in_the_table() -> None:
    assert {kind: handler.kind for kind, handler in HANDLERS.items()} == {
        "import": "import",
        "export": "export",
        "capture": "capture",
    }


@BACKENDS
def test_capture_finds_the_pattern_written_into_the_overlay_and_leaves_the_original_unchanged(
    catalog: Catalog, people: People
) -> None:
    source_id = make_base_image(catalog, people.owner)
    source_file = catalog.store.image_path(source_id, "raw")
    source_sha = sha256_of(source_file)
    vm = stopped_vm(catalog, people, source_id)
    overlay = catalog.store.vms_dir / vm["id"] / "disk.qcow2"
    qemu_io(overlay, "qcow2", f"write -P {PATTERN:#x} {PATTERN_AT} 64k")
    qemu_io(overlay, "qcow2", f"write -P {PATTERN:#x} {BEYOND_AT} 4k")

    submitted = capture.submit_capture(catalog, people.owner, vm["id"], "app01-snapshot", description="from app01")
    assert submitted["status"] == Status.CREATING
    assert images.get_image(catalog, people.owner, submitted["id"])["status"] == Status.CREATING
    job = run_job(catalog, submitted["job_id"])

    assert job.state == jobs.DONE, job.error
    assert job.bytes_total == 20 * GIB
    image = images.get_image(catalog, people.owner, submitted["id"])
    assert image["status"] == Status.AVAILABLE
    assert image["disk_format"] == "raw"
    assert image["virtual_size"] == 20 * GIB
    assert image["source"] == f"vm:{vm['id']}"
    assert image["description"] == "from app01"
    captured = catalog.store.image_path(submitted["id"], "raw")
    assert read_at(captured, PATTERN_AT, 64 * 1024) == bytes([PATTERN]) * 64 * 1024
    assert read_at(captured, BEYOND_AT, 4096) == bytes([PATTERN]) * 4096
    assert read_at(captured, 0, 64 * 1024) == bytes([BASE_PATTERN]) * 64 * 1024  # the base, flattened in
    assert read_at(captured, PATTERN_AT + 64 * 1024, 4096) == bytes(4096)
    # Independent: no backing file; the original is byte for byte what it was.
    assert sha256_of(source_file) == source_sha
    assert read_at(source_file, PATTERN_AT, 4096) == bytes(4096)
    assert [p.name for p in store_files(catalog, submitted["id"])] == [captured.name]
    # The VM can be deleted, then the original image too; the capture lives on.
    vms.delete_vm(catalog, people.owner, vm["id"])
    assert images.delete_images(catalog, people.owner, [source_id])[0].ok
    assert captured.is_file()


def test_capture_prefills_the_os_fields_from_the_vms_image_and_checks_overrides(
    catalog: Catalog, people: People
) -> None:
    source_id = make_base_image(catalog, people.owner)
    vm = stopped_vm(catalog, people, source_id)

    with pytest.raises(Invalid, match="OS version 9.9 is not offered for CentOS x86_64"):
        capture.submit_capture(catalog, people.owner, vm["id"], "bad", os_version="9.9")
    with pytest.raises(Invalid, match=r"size \(GB\) 5 is out of range"):
        capture.submit_capture(catalog, people.owner, vm["id"], "bad", size_gb=5)
    image = capture.submit_capture(catalog, people.owner, vm["id"], "snap", os_version="7.6", size_gb=30)
    assert (image["os_type"], image["platform"], image["os_version"], image["arch"]) == (
        "Linux",
        "CentOS",
        "7.6",
        "x86_64",
    )
    assert image["target_size_gb"] == 30
    assert run_job(catalog, image["job_id"]).state == jobs.DONE
    assert images.get_image(catalog, people.owner, image["id"])["virtual_size"] == 30 * GIB


def test_capture_refused_while_the_vm_is_running(qemu_catalog: Catalog, people: People) -> None:
    catalog = qemu_catalog
    source_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, source_id, "app01", PASSWORD)
    assert vm["status"] == "running"
    before = images.count_images(catalog, people.admin)

    with pytest.raises(Conflict) as caught:
        capture.submit_capture(catalog, people.owner, vm["id"], "snap")
    assert str(caught.value) == f"vm {vm['id']} is running; stop it before capturing an image from it"
    assert images.count_images(catalog, people.admin) == before

    vms.stop_vm(catalog, people.owner, vm["id"])
    assert capture.submit_capture(catalog, people.owner, vm["id"], "snap")["status"] == Status.CREATING


def test_capture_refusals_for_other_tenants_and_viewers(catalog: Catalog, people: People) -> None:
    source_id = make_base_image(catalog, people.owner)
    vm = stopped_vm(catalog, people, source_id)
    with pytest.raises(NotFound, match=f"vm {vm['id']} not found"):
        capture.submit_capture(catalog, people.other_owner, vm["id"], "snap")
    with pytest.raises(Forbidden, match=f"account acme-viewer may view but not change vm {vm['id']}"):
        capture.submit_capture(catalog, people.viewer, vm["id"], "snap")


@BACKENDS
def test_vm_cannot_be_started_deleted_or_captured_again_while_a_capture_runs(
    qemu_catalog: Catalog, people: People
) -> None:
    catalog = qemu_catalog
    source_id = make_base_image(catalog, people.owner)
    vm = stopped_vm(catalog, people, source_id)
    image = capture.submit_capture(catalog, people.owner, vm["id"], "snap")

    with pytest.raises(Conflict, match=f"vm {vm['id']} is being captured into {image['id']}"):
        vms.start_vm(catalog, people.owner, vm["id"])
    with pytest.raises(Conflict, match=f"vm {vm['id']} is being captured into {image['id']}"):
        vms.delete_vm(catalog, people.owner, vm["id"])
    with pytest.raises(Conflict, match=f"vm {vm['id']} is already being captured into {image['id']}"):
        capture.submit_capture(catalog, people.owner, vm["id"], "again")
    assert run_job(catalog, image["job_id"]).state == jobs.DONE
    assert vms.start_vm(catalog, people.owner, vm["id"])["status"] == "running"
    vms.delete_vm(catalog, people.owner, vm["id"])


@BACKENDS
def test_failed_capture_ends_import_failed_with_the_reason_and_leaves_nothing_in_the_store(
    catalog: Catalog, people: People
) -> None:
    source_id = make_base_image(catalog, people.owner)
    vm = stopped_vm(catalog, people, source_id)
    image = capture.submit_capture(catalog, people.owner, vm["id"], "snap")
    overlay = catalog.store.vms_dir / vm["id"] / "disk.qcow2"
    overlay.write_bytes(b"QFI\xfb" + b"\0" * 100)  # a broken qcow2

    job = run_job(catalog, image["job_id"])

    assert job.state == jobs.FAILED
    row = image_row(catalog, image["id"])
    assert row.status == Status.IMPORT_FAILED
    assert row.error is not None and row.error.startswith("qemu-img info failed:")
    assert row.error == job.error
    assert store_files(catalog, image["id"]) == []
    assert list(catalog.store.staging_dir.iterdir()) == []
    # A failed capture may be deleted like a failed import.
    assert images.delete_images(catalog, people.owner, [image["id"]])[0].ok


def test_capture_failing_during_conversion_removes_the_partial_file(
    catalog: Catalog, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_id = make_base_image(catalog, people.owner)
    vm = stopped_vm(catalog, people, source_id)
    image = capture.submit_capture(catalog, people.owner, vm["id"], "snap")

    def convert_then_fail(ctx, overlay, staged, total):  # type: ignore[no-untyped-def]
        staged.write_bytes(b"partial")
        raise capture.Failed("qemu-img convert failed: No space left on device")

    monkeypatch.setattr(capture.CaptureHandler, "_convert", staticmethod(convert_then_fail))
    job = run_job(catalog, image["job_id"])

    assert job.state == jobs.FAILED
    row = image_row(catalog, image["id"])
    assert (row.status, row.error) == (Status.IMPORT_FAILED, "qemu-img convert failed: No space left on device")
    assert store_files(catalog, image["id"]) == []
    with db.read_session(catalog.engine) as session:
        assert session.exec(select(Job).where(Job.image_id == image["id"])).one().state == jobs.FAILED
