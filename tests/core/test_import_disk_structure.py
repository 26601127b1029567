"""Anything that is not a disk never becomes an image (checklist F14): a source must carry a partition
table, a file system or volume signature (libblkid's `blkid -p`), or a boot sector. A note, an HTML
error page that passes the web-page check, megabytes of zeros, and a blank disk in any format end
`import_failed` with one reason and nothing left; `import.require_disk_structure = false` restores
the old behaviour."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.importer import diskprobe
from core.importer.inspect import Refused
from tests.conftest import People
from tests.importkit import GIB, import_and_wait, leftovers, make_disk, qemu_img

NOT_A_DISK = "not a disk image: no partition table, file system or boot sector found"
needs_mkfs = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)")


def note(folder: Path) -> Path:
    path = folder / "ubuntu-22.04.qcow2"
    path.write_bytes((b"remember to download the real image tomorrow\n" * 40)[:1024])  # 1 KiB exactly
    return path


def error_page(folder: Path) -> Path:
    """An error page as some servers send it: a byte-order mark first, padded to whole sectors."""
    path = folder / "centos-7.raw"
    page = "\ufeff<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    path.write_bytes(page.encode().ljust(4096, b" "))
    return path


def zeros(folder: Path) -> Path:
    path = folder / "disk.raw"
    with open(path, "wb") as handle:
        handle.write(bytes(8 << 20))  # written, not a hole: what a failed download leaves
    return path


def blank_qcow2(folder: Path) -> Path:
    return make_disk(folder, "qcow2", structure=False)


def blank_vmdk(folder: Path) -> Path:
    return make_disk(folder, "vmdk", options="subformat=streamOptimized", structure=False)


def assert_not_a_disk(catalog: Catalog, people: People, source: Path) -> None:
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.IMPORT_FAILED
    assert image.error == NOT_A_DISK
    assert image.disk_format is None and image.sha256 is None
    assert leftovers(catalog) == []


@pytest.mark.parametrize("build", [note, error_page, zeros, blank_qcow2, blank_vmdk])
def test_f14_a_source_without_any_disk_structure_is_refused(
    catalog: Catalog, people: People, tmp_path: Path, build
) -> None:
    assert_not_a_disk(catalog, people, build(tmp_path))


@pytest.mark.parametrize("build", [zeros, blank_qcow2])
def test_f14_refused_too_when_the_store_keeps_qcow2(catalog: Catalog, people: People, tmp_path: Path, build) -> None:
    catalog.settings.import_.store_format = "qcow2"
    assert_not_a_disk(catalog, people, build(tmp_path))


@pytest.mark.parametrize("build", [zeros, blank_qcow2])
def test_f14_require_disk_structure_false_imports_them_again(
    catalog: Catalog, people: People, tmp_path: Path, build
) -> None:
    catalog.settings.import_.require_disk_structure = False
    image = import_and_wait(catalog, people.owner, file=str(build(tmp_path)))
    assert image.status == Status.AVAILABLE, image.error
    assert image.virtual_size == 20 * GIB
    assert leftovers(catalog) == [f"images/{image.id}.raw"]


def test_f14_the_default_is_to_require_a_disk_structure(catalog: Catalog) -> None:
    from core.catalog.settings import ImportSettings

    assert ImportSettings().require_disk_structure is True
    assert catalog.settings.import_.require_disk_structure is True


# ---- what counts as a disk -----------------------------------------------------------------


def ext4(folder: Path) -> Path:
    """A bare file system, no partition table."""
    path = folder / "fs.raw"
    qemu_img("create", "-q", "-f", "raw", str(path), "32M")
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)
    return path


def boot_sector(folder: Path) -> Path:
    """Boot code ending in 55 AA and no partition entry (a volume boot record)."""
    path = folder / "boot.raw"
    qemu_img("create", "-q", "-f", "raw", str(path), "8M")
    with open(path, "r+b") as handle:
        handle.write(b"\xeb\x3c\x90" + bytes(507) + b"\x55\xaa")
    return path


@needs_mkfs
@pytest.mark.parametrize("store_format", ["raw", "qcow2"])
@pytest.mark.parametrize("source_format", ["raw", "qcow2", "vhdx"])
def test_f14_a_bare_file_system_is_a_disk(
    catalog: Catalog, people: People, tmp_path: Path, source_format: str, store_format: str
) -> None:
    catalog.settings.import_.store_format = store_format
    source = ext4(tmp_path)
    if source_format != "raw":
        converted = tmp_path / f"fs.{source_format}"
        qemu_img("convert", "-q", "-f", "raw", "-O", source_format, str(source), str(converted))
        source = converted
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.AVAILABLE, image.error
    stored = f"images/{image.id}.{store_format}"
    # a stored file that default links serve (qcow2) is hashed by the import: its checksum beside it
    assert leftovers(catalog) == ([stored, stored + ".sha256"] if store_format == "qcow2" else [stored])


def test_f14_a_boot_sector_alone_is_a_disk(catalog: Catalog, people: People, tmp_path: Path) -> None:
    image = import_and_wait(catalog, people.owner, file=str(boot_sector(tmp_path)))
    assert image.status == Status.AVAILABLE, image.error


@needs_mkfs
def test_f14_the_probe_names_what_libblkid_finds(tmp_path: Path) -> None:
    assert diskprobe.check_raw(ext4(tmp_path)) == "ext4"
    assert diskprobe.check_raw(make_disk(tmp_path, "raw")) == "dos"
    assert diskprobe.probe(zeros(tmp_path)) == {}
    with pytest.raises(Refused, match=f"^{NOT_A_DISK}$"):
        diskprobe.check_raw(zeros(tmp_path))
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(510) + b"\x55\xaa")
    assert diskprobe.has_boot_sector(blank.read_bytes())
