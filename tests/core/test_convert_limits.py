"""Exports and captures run qemu-img convert under import.convert_* limits, like imports: too little
memory or time fails the job with a clean reason and leaves no partial file anywhere."""

from __future__ import annotations

import subprocess

import pytest

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job, Status
from core.compute import capture, vms
from core.images import exports
from core.jobs import jobs
from tests.conftest import People
from tests.importkit import run_job
from tests.vmdata import make_base_image

OUT_OF_MEMORY = "qemu-img convert ran out of memory (limit 16 MiB)"
TOO_LONG = "conversion took too long; stopped"


def starve(catalog: Catalog, limit: str) -> None:
    """Give every qemu-img convert 16 MiB of address space, or (nearly) no time at all."""
    settings = catalog.settings.import_
    if limit == "memory":
        settings.convert_memory_mb = 16
    else:
        settings.convert_timeout_seconds = 0
        settings.convert_min_mib_per_second = 1e12


def export(catalog: Catalog, image_id: str) -> Job:
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        job = exports.ensure(catalog, session, image, "qcow2")
        assert job is not None
        job_id = job.id
    assert job_id is not None
    return run_job(catalog, job_id, 120, kind=exports.KIND)


@pytest.mark.parametrize(("limit", "reason"), [("memory", OUT_OF_MEMORY), ("time", TOO_LONG)])
def test_export_fails_under_a_too_small_limit_and_leaves_no_file(
    catalog: Catalog, people: People, limit: str, reason: str
) -> None:
    image_id = make_base_image(catalog, people.owner)
    starve(catalog, limit)

    job = export(catalog, image_id)

    assert (job.state, job.error) == (jobs.FAILED, reason)
    assert list(catalog.store.exports_dir.iterdir()) == []
    assert list(catalog.store.staging_dir.iterdir()) == []


def test_export_within_the_limits_makes_the_same_disk(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    catalog.settings.import_.convert_memory_mb = 512

    job = export(catalog, image_id)

    assert job.state == jobs.DONE, job.error
    made = catalog.store.export_path(image_id, "qcow2")
    source = catalog.store.image_path(image_id, "raw")
    compared = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source), str(made)], capture_output=True, check=False
    )
    assert compared.returncode == 0, compared.stdout
    assert exports.read_checksum(made) is not None
    assert list(catalog.store.staging_dir.iterdir()) == []


@pytest.mark.parametrize(("limit", "reason"), [("memory", OUT_OF_MEMORY), ("time", TOO_LONG)])
def test_capture_fails_under_a_too_small_limit_and_leaves_no_file(
    catalog: Catalog, people: People, limit: str, reason: str
) -> None:
    source_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, source_id, "app01", "Tr1cky-Pass!", start=False)
    image = capture.submit_capture(catalog, people.owner, vm["id"], "snap")
    starve(catalog, limit)

    job = run_job(catalog, image["job_id"], 120, kind=capture.KIND)

    assert (job.state, job.error) == (jobs.FAILED, reason)
    with db.read_session(catalog.engine) as session:
        row = session.get(Image, image["id"])
    assert row is not None and (row.status, row.error) == (Status.IMPORT_FAILED, reason)
    assert catalog.store.files_of_image(image["id"]) == []
    assert list(catalog.store.staging_dir.iterdir()) == []
