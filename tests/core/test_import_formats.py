"""Every accepted format is converted: virtual size equal to the target, the content read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.catalog import Catalog
from core.models import Status
from tests.conftest import People
from tests.importkit import (
    GIB,
    PATTERN,
    PATTERN_LENGTH,
    PATTERN_OFFSET,
    import_and_wait,
    leftovers,
    make_disk,
    make_iso,
    make_ova,
    sha256_of,
)

FORMATS = [
    ("raw", ""),
    ("qcow2", "compat=0.10"),
    ("qcow2", "compat=1.1"),
    ("vmdk", "subformat=monolithicSparse"),
    ("vmdk", "subformat=streamOptimized"),
    ("vpc", "subformat=fixed"),
    ("vpc", "subformat=dynamic"),
    ("vhdx", ""),
]


def assert_pattern(path: Path) -> None:
    with open(path, "rb") as handle:
        handle.seek(PATTERN_OFFSET)
        assert handle.read(PATTERN_LENGTH) == bytes([PATTERN]) * PATTERN_LENGTH
        handle.seek(0)
        assert handle.read(PATTERN_OFFSET) == bytes(PATTERN_OFFSET)


@pytest.mark.parametrize(("fmt", "options"), FORMATS, ids=[f"{f}-{o or 'default'}" for f, o in FORMATS])
def test_every_format_is_converted_to_raw_with_target_size_and_content(
    catalog: Catalog, people: People, tmp_path: Path, fmt: str, options: str
) -> None:
    source = make_disk(tmp_path, fmt, options=options)
    image = import_and_wait(catalog, people.owner, file=str(source), size_gb=20)
    assert image.status == Status.AVAILABLE, image.error
    assert image.disk_format == "raw"
    assert image.virtual_size == 20 * GIB
    assert image.sha256 == sha256_of(source)
    stored = catalog.store.image_path(image.id, "raw")
    assert stored.stat().st_size == 20 * GIB
    assert_pattern(stored)
    # Sparse: 20 GiB of virtual size, a few MiB on disk.
    assert os.stat(stored).st_blocks * 512 < 16 << 20
    assert leftovers(catalog) == [f"images/{image.id}.raw"]


def test_ova_disk_is_extracted_inspected_and_converted(catalog: Catalog, people: People, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "vmdk", options="subformat=streamOptimized")
    ova = make_ova(tmp_path, disk)
    image = import_and_wait(catalog, people.owner, file=str(ova))
    assert image.status == Status.AVAILABLE, image.error
    assert image.disk_format == "raw"
    assert image.virtual_size == 20 * GIB
    assert image.sha256 == sha256_of(ova)
    assert_pattern(catalog.store.image_path(image.id, "raw"))
    assert leftovers(catalog) == [f"images/{image.id}.raw"]


def test_iso_is_kept_as_it_is(catalog: Catalog, people: People, tmp_path: Path) -> None:
    iso = make_iso(tmp_path)
    image = import_and_wait(catalog, people.owner, file=str(iso))
    assert image.status == Status.AVAILABLE, image.error
    assert image.disk_format == "iso"
    assert image.virtual_size == iso.stat().st_size
    stored = catalog.store.image_path(image.id, "iso")
    assert stored.read_bytes() == iso.read_bytes()
    assert image.sha256 == sha256_of(iso)


def test_store_format_qcow2_is_configurable(catalog: Catalog, people: People, tmp_path: Path) -> None:
    catalog.settings.import_.store_format = "qcow2"
    source = make_disk(tmp_path, "vmdk", options="subformat=monolithicSparse")
    image = import_and_wait(catalog, people.owner, file=str(source), size_gb=25)
    assert image.status == Status.AVAILABLE, image.error
    assert image.disk_format == "qcow2"
    assert image.virtual_size == 25 * GIB
    stored = catalog.store.image_path(image.id, "qcow2")
    raw = tmp_path / "back.raw"
    import subprocess

    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(stored), str(raw)], check=True)
    assert raw.stat().st_size == 25 * GIB
    assert_pattern(raw)
