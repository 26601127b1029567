"""Every accepted format is converted: virtual size equal to the target, the content read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
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
        head = handle.read(PATTERN_OFFSET)  # the fixture's MBR, then nothing up to the pattern
        assert head[510:512] == b"\x55\xaa" and head[512:] == bytes(PATTERN_OFFSET - 512)


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


def test_bootable_iso_with_a_gpt_is_not_a_polyglot(catalog: Catalog, people: People, tmp_path: Path) -> None:
    iso = make_iso(tmp_path, "hybrid.iso")
    with open(iso, "r+b") as handle:  # a hybrid ISO: protective MBR and a GPT header in the system area
        handle.seek(446)
        handle.write(bytes([0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]))
        handle.seek(510)
        handle.write(b"\x55\xaa" + b"EFI PART")
    image = import_and_wait(catalog, people.owner, file=str(iso))
    assert image.status == Status.AVAILABLE, image.error
    assert image.disk_format == "iso"


def test_ova_made_by_tar_with_dot_slash_names(catalog: Catalog, people: People, tmp_path: Path) -> None:
    import subprocess

    from tests.importkit import ovf_text

    disk = make_disk(tmp_path, "vmdk", options="subformat=streamOptimized")
    folder = tmp_path / "ova"
    folder.mkdir()
    (folder / "vm.ovf").write_text(ovf_text([disk.name]))
    (folder / disk.name).write_bytes(disk.read_bytes())
    ova = tmp_path / "vm.ova"
    subprocess.run(
        ["tar", "--format=ustar", "-cf", str(ova), "-C", str(folder), "./vm.ovf", f"./{disk.name}"], check=True
    )
    image = import_and_wait(catalog, people.owner, file=str(ova))
    assert image.status == Status.AVAILABLE, image.error
    assert_pattern(catalog.store.image_path(image.id, "raw"))
