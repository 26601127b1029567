"""`init --demo`: every demo row is what it says (a real import job, a real capture job, a real
failure), seeding happens once (what the user destroys stays destroyed), and under a real
`imagehub serve` the importing and creating images end available."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job, Status, Vm
from core.catalog.settings import load_settings
from core.images.images import delete_images, destroy_images
from core.jobs import jobs
from core.rules.access import Actor, resolve_actor
from core.setup import demo
from core.setup.bootstrap import initialise
from tests.conftest import write_config
from tests.gateway.conftest import GATEWAY_CONFIG, start_server, stop_server


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder seeded once for the module (nine real imports: seconds); tests copy it."""
    folder = tmp_path_factory.mktemp("demo-template")
    catalog, _ = initialise(load_settings(write_config(folder, GATEWAY_CONFIG)))
    try:
        assert len(demo.seed_demo(catalog)) == len(demo.DEMO_IMAGES)
    finally:
        catalog.dispose()
    return folder / "var"


@pytest.fixture
def seeded(demo_template: Path, tmp_path: Path) -> Iterator[Catalog]:
    config = write_config(tmp_path, GATEWAY_CONFIG)
    # cp keeps the sparse disks sparse
    subprocess.run(["cp", "-a", "--sparse=always", str(demo_template), str(tmp_path / "var")], check=True)
    catalog, _ = initialise(load_settings(config))
    yield catalog
    catalog.dispose()


def demo_owner(catalog: Catalog) -> Actor:
    with db.read_session(catalog.engine) as session:
        return resolve_actor(session, demo.DEMO_OWNER)


def by_name(catalog: Catalog) -> dict[str, Image]:
    with db.read_session(catalog.engine) as session:
        return {image.name: image for image in session.exec(select(Image))}


def jobs_of(catalog: Catalog, image_id: str) -> list[Job]:
    with db.read_session(catalog.engine) as session:
        return list(session.exec(select(Job).where(Job.image_id == image_id)))


def test_every_demo_row_is_what_it_says(seeded: Catalog) -> None:
    images = by_name(seeded)
    assert {name: images[name].status for name in images} == {spec.name: spec.status for spec in demo.DEMO_IMAGES}

    importing = images["win-iis"]
    (job,) = jobs_of(seeded, importing.id)
    assert job.kind == "import" and job.state == jobs.QUEUED
    source = seeded.store.staging_dir / demo.DEMO_FOLDER / Path(jobs.params_of(job)["path"]).name  # copied here
    assert source.is_file() and source.stat().st_size == demo.IMPORTING_SOURCE_BYTES

    creating = images["snapshot-app01"]
    (capture,) = jobs_of(seeded, creating.id)
    assert capture.kind == "capture" and capture.state == jobs.QUEUED
    with db.read_session(seeded.engine) as session:
        vm = session.get(Vm, jobs.params_of(capture)["vm_id"])
    assert vm is not None and vm.name == demo.DEMO_VM and vm.image_id == images[demo.CAPTURED_FROM].id
    assert creating.source_vm_id == vm.id

    failed = images["broken-upload"]
    (import_job,) = jobs_of(seeded, failed.id)
    assert import_job.kind == "import" and import_job.state == jobs.FAILED
    assert failed.error and failed.error == import_job.error  # the pipeline's own reason
    assert "damaged or truncated" in failed.error

    for name in ("web-frontend", "old-test"):  # imported for real: a file in the store
        image = images[name]
        assert image.disk_format and seeded.store.image_path(image.id, image.disk_format).is_file()


def test_demo_is_seeded_once_and_a_destroyed_image_stays_destroyed(seeded: Catalog) -> None:
    assert demo.seed_demo(seeded) == []
    owner = demo_owner(seeded)
    images = by_name(seeded)
    assert all(r.ok for r in delete_images(seeded, owner, [images["db-primary"].id]))
    assert all(r.ok for r in destroy_images(seeded, owner, [images["db-primary"].id, images["old-test"].id]))
    assert demo.seed_demo(seeded) == []
    left = by_name(seeded)
    assert "db-primary" not in left and "old-test" not in left and len(left) == len(images) - 2


def test_an_interrupted_seeding_is_completed_by_the_next_run(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    imported = demo._imported
    calls = {"n": 0}

    def interrupted_on_the_third(*args: object) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return imported(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(demo, "_imported", interrupted_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        demo.seed_demo(catalog)
    monkeypatch.setattr(demo, "_imported", imported)
    assert len(by_name(catalog)) == 2
    assert len(demo.seed_demo(catalog)) == len(demo.DEMO_IMAGES) - 2
    assert set(by_name(catalog)) == {spec.name for spec in demo.DEMO_IMAGES}
    assert demo.seed_demo(catalog) == []


def await_status(catalog: Catalog, image_id: str, wanted: str, timeout: float) -> str | None:
    """Poll the catalog (bounded) until the image has `wanted`; its last status."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        with db.read_session(catalog.engine) as session:
            image = session.get(Image, image_id)
            status = image.status if image else None
        if status == wanted:
            return status
        time.sleep(0.2)
    return status


def test_the_demo_import_and_capture_end_available_under_serve(tmp_path: Path) -> None:
    # seeded here: the queued import names its source by its path in this data folder
    seeded, _ = initialise(load_settings(write_config(tmp_path, GATEWAY_CONFIG)))
    demo.seed_demo(seeded)
    images = by_name(seeded)
    assert seeded.settings.config_path is not None
    proc, _ = start_server(seeded.settings.config_path, tmp_path, tmp_path / "serve.log")
    try:
        for name in ("win-iis", "snapshot-app01"):
            assert await_status(seeded, images[name].id, Status.AVAILABLE, 300) == Status.AVAILABLE, (
                name,
                (tmp_path / "serve.log").read_text()[-2000:],
            )
    finally:
        assert stop_server(proc) == 0
    importing = by_name(seeded)["win-iis"]
    assert importing.virtual_size == 50 * 1024**3 and importing.sha256
    (job,) = jobs_of(seeded, importing.id)
    assert job.state == jobs.DONE and job.bytes_total  # it reported its progress on the way
    seeded.dispose()
