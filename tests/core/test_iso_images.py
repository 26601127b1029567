"""An ISO is kept as it is (installation media): downloaded as it is, never a VM's disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict, Invalid
from core.catalog.models import Status
from core.compute import vms
from core.jobs.worker import Worker
from core.links import links
from tests.conftest import People
from tests.importkit import import_and_wait, make_iso, sha256_of


@pytest.fixture
def iso_image(catalog: Catalog, people: People, tmp_path: Path):
    image = import_and_wait(catalog, people.owner, file=str(make_iso(tmp_path)))
    assert image.status == Status.AVAILABLE and image.disk_format == "iso"
    return image


def test_an_iso_is_downloaded_as_it_is(catalog: Catalog, people: People, iso_image) -> None:
    job_id = links.prepare(catalog, people.owner, iso_image.id)
    if job_id is not None:  # the checksum, made by an export job
        worker = Worker(catalog, only_job=job_id, poll_seconds=0.05)
        try:
            assert worker.run_until(job_id, timeout=60).state == "done"
        finally:
            worker.join()
    created = links.create_link(catalog, people.owner, iso_image.id)
    stored = catalog.store.image_path(iso_image.id, "iso")
    assert created.view["filename"] == f"{iso_image.id}.iso" and created.view["format"] == "iso"
    assert created.view["sha256"] == sha256_of(stored)
    with pytest.raises(Invalid, match="is an ISO .installation media. and is downloaded as it is"):
        links.create_link(catalog, people.owner, iso_image.id, "qcow2")


def test_no_vm_boots_from_an_iso(catalog: Catalog, people: People, iso_image) -> None:
    with pytest.raises(Conflict, match="is an ISO"):
        vms.create_vm(catalog, people.owner, iso_image.id, "vm1", "Str0ng!Passw0rd")
    assert vms.list_vms(catalog, people.owner) == []
