"""Partition tables (checklist F7): real GPT and MBR disks made by sfdisk import fine, in any source
format; a GPT that is damaged or lies (checksums, bounds, overlaps, protective MBR without a GPT)
and an MBR partition past the disk's end end `import_failed` with the reason, nothing left behind."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.importer import partitions
from core.importer.inspect import Refused
from tests.conftest import People
from tests.importkit import import_and_wait, leftovers, qemu_img

pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk (Debian package fdisk)")

GPT_LAYOUT = "label: gpt\n,16M\n,16M\n,\n"
MBR_LAYOUT = "label: dos\n,16M,83,*\n,16M,7\n,,82\n"


def partitioned(folder: Path, layout: str, name: str = "disk.raw") -> Path:
    path = folder / name
    qemu_img("create", "-q", "-f", "raw", str(path), "64M")
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], input=layout, text=True, check=True
    )
    return path


def read_gpt(path: Path, sector: int = 512) -> tuple[bytearray, bytearray]:
    data = path.read_bytes()
    header = bytearray(data[sector : 2 * sector])
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    return header, bytearray(data[entries_lba * sector : entries_lba * sector + count * size])


def write_gpt(path: Path, header: bytearray, entries: bytearray, sector: int = 512) -> None:
    """Write the header and entries back with their checksums made right again."""
    struct.pack_into("<I", header, 88, zlib.crc32(entries))
    header_size = struct.unpack_from("<I", header, 12)[0]
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:header_size])))
    entries_lba = struct.unpack_from("<Q", header, 72)[0]
    with open(path, "r+b") as handle:
        os.pwrite(handle.fileno(), bytes(header), sector)
        os.pwrite(handle.fileno(), bytes(entries), entries_lba * sector)


def patch(path: Path, offset: int, data: bytes) -> Path:
    with open(path, "r+b") as handle:
        os.pwrite(handle.fileno(), data, offset)
    return path


# ---- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [GPT_LAYOUT, MBR_LAYOUT], ids=["gpt", "mbr"])
@pytest.mark.parametrize("source_format", ["raw", "qcow2", "vmdk", "vhdx"])
def test_a_real_partitioned_disk_imports_in_every_format(
    catalog: Catalog, people: People, tmp_path: Path, layout: str, source_format: str
) -> None:
    disk = partitioned(tmp_path, layout)
    source = disk
    if source_format != "raw":
        source = tmp_path / f"disk.{source_format}"
        qemu_img("convert", "-q", "-f", "raw", "-O", source_format, str(disk), str(source))
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.AVAILABLE, image.error


def test_a_gpt_disk_is_checked_when_the_store_keeps_qcow2(catalog: Catalog, people: People, tmp_path: Path) -> None:
    catalog.settings.import_.store_format = "qcow2"
    good = import_and_wait(catalog, people.owner, file=str(partitioned(tmp_path, GPT_LAYOUT, "good.raw")))
    assert good.status == Status.AVAILABLE and good.disk_format == "qcow2", good.error
    bad = partitioned(tmp_path, GPT_LAYOUT, "bad.raw")
    patch(bad, 512 + 40, b"\xff")  # inside the header: its checksum no longer holds
    refused = import_and_wait(catalog, people.owner, file=str(bad))
    assert refused.status == Status.IMPORT_FAILED
    assert refused.error == "GPT header checksum is wrong; refused"


def test_boot_code_ending_in_55aa_is_not_taken_for_a_partition_table(tmp_path: Path) -> None:
    sector = bytearray(os.urandom(512))
    sector[446:510] = b"Missing operating system. Press any key to reboot....".ljust(64, b"\0")
    sector[510:512] = b"\x55\xaa"
    assert partitions.check(bytes(sector), 64 << 20) == "none"
    assert partitions.check(b"\0" * 4096, 64 << 20) == "none"


def test_a_4kn_gpt_is_read_at_4096_byte_sectors(tmp_path: Path) -> None:
    disk = partitioned(tmp_path, GPT_LAYOUT)
    header, entries = read_gpt(disk)
    # Re-lay the same table for 4096-byte sectors: every LBA divided by 8.
    alternate, _first, last_usable = struct.unpack_from("<QQQ", header, 32)
    struct.pack_into("<QQ", header, 32, (alternate + 1) // 8 - 1, 6)  # first usable: after 16 KiB of entries
    struct.pack_into("<Q", header, 48, (last_usable + 1) // 8 - 1)
    struct.pack_into("<Q", header, 72, 2)
    for index in range(len(entries) // 128):
        first, last = struct.unpack_from("<QQ", entries, index * 128 + 32)
        if first:
            struct.pack_into("<QQ", entries, index * 128 + 32, first // 8, (last + 1) // 8 - 1)
    four_k = tmp_path / "4kn.raw"
    shutil.copyfile(disk, four_k)
    patch(four_k, 512, b"\0" * 512)
    write_gpt(four_k, header, entries, sector=4096)
    assert partitions.check(partitions.read_head(four_k, "raw"), 64 << 20) == "gpt"


# ---- refused ---------------------------------------------------------------------------------


def gpt_header_checksum(disk: Path) -> None:
    patch(disk, 512 + 40, b"\xff")


def gpt_entries_checksum(disk: Path) -> None:
    patch(disk, 1024 + 56, b"X")  # the first partition's name


def gpt_missing(disk: Path) -> None:
    patch(disk, 512, b"\0" * 512)


def gpt_bad_boot_flag(disk: Path) -> None:
    patch(disk, 446, b"\x7f")


def gpt_header_size(disk: Path) -> None:
    header, entries = read_gpt(disk)
    struct.pack_into("<I", header, 12, 4096)
    write_gpt(disk, header, entries)


def gpt_usable_past_the_end(disk: Path) -> None:
    header, entries = read_gpt(disk)
    struct.pack_into("<Q", header, 48, 1 << 40)
    write_gpt(disk, header, entries)


def gpt_partition_outside(disk: Path) -> None:
    header, entries = read_gpt(disk)
    last_usable = struct.unpack_from("<Q", header, 48)[0]
    struct.pack_into("<Q", entries, 128 * 2 + 40, last_usable + 10)
    write_gpt(disk, header, entries)


def gpt_partitions_overlap(disk: Path) -> None:
    header, entries = read_gpt(disk)
    first_of_one = struct.unpack_from("<Q", entries, 32)[0]
    struct.pack_into("<Q", entries, 128 + 32, first_of_one + 8)
    write_gpt(disk, header, entries)


def gpt_too_many_entries(disk: Path) -> None:
    header, entries = read_gpt(disk)
    struct.pack_into("<I", header, 80, 1 << 20)
    write_gpt(disk, header, entries)


def gpt_array_over_the_usable_sectors(disk: Path) -> None:
    header, entries = read_gpt(disk)
    struct.pack_into("<Q", header, 40, 10)  # first usable sector inside the entry array
    write_gpt(disk, header, entries)


def mbr_partition_past_the_end(disk: Path) -> None:
    patch(disk, 446 + 16 + 12, struct.pack("<I", 0xFFFFFFF0))


REFUSED: list[tuple[str, Callable[[Path], None], str]] = [
    (GPT_LAYOUT, gpt_header_checksum, "GPT header checksum is wrong; refused"),
    (GPT_LAYOUT, gpt_entries_checksum, "GPT entry array checksum is wrong; refused"),
    (GPT_LAYOUT, gpt_missing, "GPT header is missing at LBA 1 (protective MBR without a GPT); refused"),
    (GPT_LAYOUT, gpt_bad_boot_flag, "protective MBR has an invalid boot flag; the GPT disk is refused"),
    (GPT_LAYOUT, gpt_header_size, "GPT header size 4096 is invalid; refused"),
    (GPT_LAYOUT, gpt_usable_past_the_end, "GPT usable sectors 2048 to 1099511627776 do not fit a disk of 41943040"),
    (GPT_LAYOUT, gpt_partition_outside, "GPT partition 3 (sectors"),
    (GPT_LAYOUT, gpt_partitions_overlap, "GPT partitions 1 and 2 overlap; refused"),
    (GPT_LAYOUT, gpt_too_many_entries, "GPT entry array of 1048576 entries of 128 bytes is invalid; refused"),
    (GPT_LAYOUT, gpt_array_over_the_usable_sectors, "GPT entry array at LBA 2 overlaps the usable sectors"),
    (MBR_LAYOUT, mbr_partition_past_the_end, "MBR partition 2 lies outside the disk (sectors 34816 to"),
]


@pytest.mark.parametrize(("layout", "damage", "reason"), REFUSED, ids=[r[1].__name__ for r in REFUSED])
def test_a_damaged_or_lying_table_is_refused_and_nothing_is_left(
    catalog: Catalog, people: People, tmp_path: Path, layout: str, damage: Callable[[Path], None], reason: str
) -> None:
    disk = partitioned(tmp_path, layout)
    damage(disk)
    image = import_and_wait(catalog, people.owner, file=str(disk))
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None and image.error.startswith(reason), image.error
    assert leftovers(catalog) == []


def test_a_damaged_table_inside_a_qcow2_is_refused_too(catalog: Catalog, people: People, tmp_path: Path) -> None:
    disk = partitioned(tmp_path, GPT_LAYOUT)
    gpt_partitions_overlap(disk)
    source = tmp_path / "disk.qcow2"
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(disk), str(source))
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.IMPORT_FAILED and image.error == "GPT partitions 1 and 2 overlap; refused"


def test_the_unit_check_names_the_rule(tmp_path: Path) -> None:
    disk = partitioned(tmp_path, GPT_LAYOUT)
    head = partitions.read_head(disk, "raw")
    assert partitions.check(head, 64 << 20) == "gpt"
    # The same table on a disk too small for it: the usable range no longer fits.
    with pytest.raises(Refused, match="do not fit a disk of 1024 sectors"):
        partitions.check(head, 1024 * 512)
