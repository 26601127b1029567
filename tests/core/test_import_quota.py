"""The staging quota (checklist U8): a tenant's running imports together may not hold more than
`import.staging_quota_gb` in staging; the import that passes it fails with the reason and leaves
nothing, other tenants are not counted, and no quota (0) means none."""

from __future__ import annotations

from pathlib import Path

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.importer.job import staging_folder
from core.importer.quota import allocated
from core.importer.submit import submit_import
from core.jobs.worker import Worker
from tests.conftest import People
from tests.importkit import (
    OS,
    HttpBehaviour,
    http_server,
    image_row,
    import_and_wait,
    leftovers,
    port_of,
    random_raw,
    run_job,
    wait_for,
)

MIB = 1 << 20
GIB = 1 << 30


def test_an_import_passing_the_quota_fails_with_the_reason_and_leaves_nothing(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    catalog.settings.import_.staging_quota_gb = 32 * MIB / GIB
    image = import_and_wait(catalog, people.owner, file=str(random_raw(tmp_path, "big.raw", 64)))
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None
    assert image.error.startswith("the tenant's running imports hold ")
    assert "more than its quota of 0.03 GB" in image.error
    assert leftovers(catalog) == []


def test_an_import_under_the_quota_and_no_quota_at_all_both_pass(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = random_raw(tmp_path, "small.raw", 24)
    catalog.settings.import_.staging_quota_gb = 64 * MIB / GIB
    assert import_and_wait(catalog, people.owner, file=str(source)).status == Status.AVAILABLE
    catalog.settings.import_.staging_quota_gb = 0
    assert import_and_wait(catalog, people.owner, file=str(source)).status == Status.AVAILABLE


def test_the_quota_counts_the_tenants_other_running_imports_not_other_tenants(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    held_source = random_raw(tmp_path, "held.raw", 28)
    second = random_raw(tmp_path, "second.raw", 24)
    held = 20 * MIB
    catalog.settings.import_.staging_quota_gb = 31 * MIB / GIB
    behaviour = HttpBehaviour(files={"/held.raw": held_source}, hold_after=held)
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        first = submit_import(catalog, people.owner, name="held", url=f"{base}/held.raw", size_gb=20, **OS)
        worker = Worker(catalog, kinds=["import"], poll_seconds=0.05)
        try:
            assert worker.poll_once() == [first["job_id"]]
            assert behaviour.reached.wait(20)
            wait_for(lambda: allocated(staging_folder(catalog, first["id"])) >= held)
            # Same tenant: 20 MiB held + this one's passes 31 MiB.
            refused = import_and_wait(catalog, people.owner, file=str(second))
            assert refused.status == Status.IMPORT_FAILED
            assert refused.error is not None and refused.error.startswith("the tenant's running imports hold")
            assert not staging_folder(catalog, refused.id).exists()
            # Another tenant's import is not counted against this tenant's staging.
            other = import_and_wait(catalog, people.other_owner, file=str(second))
            assert other.status == Status.AVAILABLE, other.error
            behaviour.release.set()
            wait_for(lambda: image_row(catalog, first["id"]).status != Status.IMPORTING, 60)
        finally:
            behaviour.release.set()
            worker.join()
    held_image = image_row(catalog, first["id"])
    assert held_image.status == Status.AVAILABLE, held_image.error


def test_a_conversion_that_passes_the_quota_fails_too(catalog: Catalog, people: People, tmp_path: Path) -> None:
    """A small qcow2 that converts into more staged data than the quota allows."""
    from tests.importkit import qemu_img

    raw = random_raw(tmp_path, "data.raw", 40)
    source = tmp_path / "packed.qcow2"
    qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(source))
    catalog.settings.import_.staging_quota_gb = 60 * MIB / GIB
    view = submit_import(catalog, people.owner, name="packed", file=str(source), size_gb=20, **OS)
    run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    # 40 MiB of source plus 40 MiB converted: 80 MiB staged at the end of the conversion.
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None and image.error.startswith("the tenant's running imports hold")
    assert leftovers(catalog) == []
