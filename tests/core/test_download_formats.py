"""What a download link serves and when it is ready: qcow2 unless raw is asked for or configured
(links.default_format); the stored file's checksum written by the import when default links serve
it, so such a raw link is ready at once; an export hashed as it is written; both sizes known before
a link is made; holes hashed without being read, to the same sum `sha256sum` prints."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Invalid, NotFound
from core.catalog.models import Image, Job, Status
from core.catalog.settings import load_settings
from core.images import exports
from core.links import links
from tests.conftest import People, write_config
from tests.importkit import import_and_wait, make_disk, run_job

MIB = 1 << 20
GIB = 1 << 30
DATA_AT, DATA_BYTES = 32 * MIB, 4 * MIB


def sha256sum(path: Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return done.stdout.split()[0]


def export_jobs(catalog: Catalog, image_id: str) -> list[Job]:
    with db.read_session(catalog.engine) as session:
        return list(session.exec(select(Job).where(Job.image_id == image_id, Job.kind == exports.KIND)))


def staged_files(catalog: Catalog, image_id: str) -> list[str]:
    return sorted(p.name for p in catalog.store.staging_dir.iterdir() if p.name.lstrip(".").startswith(image_id))


def import_sparse(catalog: Catalog, people: People, tmp_path: Path) -> Image:
    """A fresh import of a qcow2 holding a few MiB: a 1 GiB raw disk in the store, mostly holes."""
    catalog.settings.images.min_size_gb = 1
    source = make_disk(tmp_path, "qcow2", "64M")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(DATA_BYTES))
    command = f"write -s {data} {DATA_AT} {DATA_BYTES}"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(source)], check=True, capture_output=True)
    image = import_and_wait(catalog, people.owner, file=str(source), size_gb=1)
    assert image.status == Status.AVAILABLE, image.error
    return image


@pytest.fixture
def sparse_image(catalog: Catalog, people: People, tmp_path: Path) -> Image:
    """Imported while links serve qcow2 by default."""
    return import_sparse(catalog, people, tmp_path)


@pytest.fixture
def raw_default_image(catalog: Catalog, people: People, tmp_path: Path) -> Image:
    """Imported while links serve raw by default (links.default_format = "raw")."""
    catalog.settings.links.default_format = "raw"
    return import_sparse(catalog, people, tmp_path)


def test_a_raw_link_to_a_fresh_import_is_ready_at_once(
    catalog: Catalog, people: People, raw_default_image: Image
) -> None:
    sparse_image = raw_default_image
    stored = catalog.store.image_path(sparse_image.id, "raw")
    assert stored.stat().st_size == GIB and stored.stat().st_blocks * 512 < 16 * MIB  # stored sparse
    digest = sha256sum(stored)
    assert exports.sum_path(stored).read_text() == f"{digest}  {stored.name}\n"
    assert links.prepare(catalog, people.owner, sparse_image.id) is None  # nothing left to make
    created = links.create_link(catalog, people.owner, sparse_image.id)
    view = created.view
    assert created.job_id is None and view["state"] == links.ACTIVE and view["sha256"] == digest
    assert view["format"] == "raw" and view["size"] == view["virtual_size"] == GIB and view["filename"] == stored.name
    assert export_jobs(catalog, sparse_image.id) == []
    assert staged_files(catalog, sparse_image.id) == []


def test_a_qcow2_export_is_hashed_as_it_is_written(catalog: Catalog, people: People, sparse_image: Image) -> None:
    job_id = links.prepare(catalog, people.owner, sparse_image.id)  # the default: qcow2
    assert job_id is not None
    assert run_job(catalog, job_id, kind=exports.KIND).state == "done"
    created = links.create_link(catalog, people.owner, sparse_image.id)
    view = created.view
    export = catalog.store.export_path(sparse_image.id, "qcow2")
    assert view["format"] == "qcow2" and view["filename"] == export.name and view["state"] == links.ACTIVE
    assert created.job_id is None and view["sha256"] == sha256sum(export)
    assert exports.sum_path(export).read_text() == f"{view['sha256']}  {export.name}\n"
    assert DATA_BYTES < view["size"] < DATA_BYTES + 8 * MIB and view["virtual_size"] == GIB
    assert [job.id for job in export_jobs(catalog, sparse_image.id)] == [job_id]
    assert staged_files(catalog, sparse_image.id) == []


def test_the_default_format_is_configured(catalog: Catalog, people: People, sparse_image: Image) -> None:
    assert catalog.settings.links.default_format == "qcow2"
    catalog.settings.links.default_format = "raw"
    created = links.create_link(catalog, people.owner, sparse_image.id)
    assert created.view["format"] == "raw" and created.view["filename"].endswith(".raw")
    assert created.job_id is not None  # imported while qcow2 was the default: hashed on request
    asked = links.create_link(catalog, people.owner, sparse_image.id, "qcow2")
    assert asked.view["format"] == "qcow2"


def test_both_sizes_before_a_link_is_made(catalog: Catalog, people: People, sparse_image: Image) -> None:
    choices = links.download_choices(catalog, people.owner, sparse_image.id)
    assert choices["default_format"] == "qcow2" and choices["virtual_size"] == GIB
    qcow2, raw = choices["formats"]
    assert qcow2["format"] == "qcow2" and not qcow2["exact"] and DATA_BYTES <= qcow2["size"] < 16 * MIB
    assert raw == {"format": "raw", "size": GIB, "exact": True, "mostly_zeros": True}
    job_id = links.prepare(catalog, people.owner, sparse_image.id, "qcow2")
    assert job_id is not None and run_job(catalog, job_id, kind=exports.KIND).state == "done"
    made = links.download_choices(catalog, people.owner, sparse_image.id)["formats"][0]
    export = catalog.store.export_path(sparse_image.id, "qcow2")
    assert made == {"format": "qcow2", "size": export.stat().st_size, "exact": True, "mostly_zeros": False}
    # the estimate said before was qemu-img's measure: the data and qcow2's own tables, within 10%
    assert abs(qcow2["size"] - made["size"]) <= made["size"] // 10
    catalog.settings.links.default_format = "raw"
    assert [f["format"] for f in links.download_choices(catalog, people.owner, sparse_image.id)["formats"]] == [
        "raw",
        "qcow2",
    ]
    with pytest.raises(NotFound):
        links.download_choices(catalog, people.other_owner, sparse_image.id)


def test_a_raw_disk_is_hashed_on_request_when_links_serve_qcow2(
    catalog: Catalog, people: People, sparse_image: Image
) -> None:
    """Hashing a raw disk costs its whole virtual size: an import does not pay it while default links
    serve qcow2; a raw link asks an export job for it (holes hashed from memory)."""
    stored = catalog.store.image_path(sparse_image.id, "raw")
    assert not exports.sum_path(stored).exists()
    job_id = links.prepare(catalog, people.owner, sparse_image.id, "raw")
    assert job_id is not None and run_job(catalog, job_id, kind=exports.KIND).state == "done"
    assert exports.read_checksum(stored) == sha256sum(stored)


def _write_at(path: Path, offset: int, size: int) -> None:
    with path.open("r+b" if path.exists() else "wb") as handle:
        handle.seek(offset)
        handle.write(os.urandom(size))


LAYOUTS: dict[str, Callable[[Path], None]] = {
    "empty": lambda p: p.write_bytes(b""),
    "only a hole": lambda p: (p.write_bytes(b""), os.truncate(p, 10 * MIB)),
    "only data": lambda p: p.write_bytes(os.urandom(3 * MIB + 5)),
    "data, hole, data, odd size": lambda p: (
        _write_at(p, 0, MIB),
        _write_at(p, 9 * MIB, 4096),
        os.truncate(p, 9 * MIB + 4096 + 777),
    ),
    "hole, data, hole": lambda p: (_write_at(p, 5 * MIB + 3, 70_000), os.truncate(p, 20 * MIB + 1)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_holes_are_hashed_as_zeros_without_being_read(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "disk.raw"
    LAYOUTS[layout](path)
    seen: list[tuple[int, int]] = []
    digest = exports.sparse_sha256(path, lambda done, total: seen.append((done, total)))
    assert digest == sha256sum(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size
    assert seen[-1:] == ([(size, size)] if size else [])


def test_an_unknown_default_format_is_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, '[links]\ndefault_format = "vmdk"\n')
    with pytest.raises(Invalid) as refused:
        load_settings(config)
    assert str(refused.value) == "invalid configuration: links.default_format: Input should be 'qcow2' or 'raw'"
    monkeypatch.setenv("IMAGEHUB_LINKS__DEFAULT_FORMAT", "raw")  # the environment overrides the file
    assert load_settings(config).links.default_format == "raw"
