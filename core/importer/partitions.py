"""Partition-table sanity of an imported disk (docs/security.md F7): a GPT must be whole and consistent.

Read from the converted disk's first sectors, as a hypervisor or a guest's firmware would read
them. A disk without a partition table (a bare file system, a blank disk) and a volume boot
record passes: only what presents itself as a partition table is held to its rules.
- MBR (boot signature 55AA, every boot flag 0x00 or 0x80, some entry used): each used entry
  starts after sector 0 and ends within the disk.
- GPT (an MBR entry of type 0xEE, the protective MBR): valid boot flags; at LBA 1 the
  "EFI PART" header with a sane size, its CRC32, `my_lba` 1, usable range inside the disk; the
  entry array after the header, of sane size, with its CRC32; each used entry inside the usable
  range, first <= last, no two overlapping.
Refusals say which rule broke; nothing here reads past the first MiB of the disk.
"""

from __future__ import annotations

import itertools
import os
import struct
import tempfile
import zlib
from pathlib import Path

from core.disk import qemu
from core.importer.inspect import Refused

MBR_BYTES = 512  # the MBR is one 512-byte block whatever the sector size
SECTORS = (512, 4096)  # logical sector sizes a GPT may be written for (512e and 4Kn disks)
GPT_SIGNATURE = b"EFI PART"
PROTECTIVE = 0xEE
MAX_ENTRIES = 4096
MAX_ENTRY_SIZE = 4096
HEAD_BYTES = 1 << 20  # the header and any entry array allowed above, at 512-byte sectors


def read_head(path: Path, fmt: str) -> bytes:
    """The first MiB of the disk `path` holds (in format `fmt`), as a guest sees it."""
    if fmt == "raw":
        with open(path, "rb", buffering=0) as handle:
            return os.pread(handle.fileno(), HEAD_BYTES, 0)
    with tempfile.TemporaryDirectory(prefix="imagehub-head-", dir=path.parent) as folder:
        head = Path(folder) / "head.raw"
        qemu.run_qemu_img(
            ["dd", "-f", fmt, "-O", "raw", "bs=65536", f"count={HEAD_BYTES // 65536}", f"if={path}", f"of={head}"],
            cpu_seconds=10,
            timeout=60,
        )
        return head.read_bytes()[:HEAD_BYTES]


def check_disk(path: Path, fmt: str, disk_size: int) -> str:
    """Check the partition table of the disk `path`; returns "gpt", "mbr" or "none"."""
    return check(read_head(path, fmt), disk_size)


def check(head: bytes, disk_size: int) -> str:
    """Check the partition table in `head` (the disk's first bytes) of a disk of `disk_size` bytes."""
    mbr = head[:MBR_BYTES]
    if len(mbr) < MBR_BYTES or mbr[510:512] != b"\x55\xaa":
        return "none"
    entries = [mbr[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    flags_valid = all(entry[0] in (0x00, 0x80) for entry in entries)
    if any(entry[4] == PROTECTIVE for entry in entries):
        if not flags_valid:
            raise Refused("protective MBR has an invalid boot flag; the GPT disk is refused")
        for sector in SECTORS:
            if head[sector : sector + 8] == GPT_SIGNATURE:
                _check_gpt(head, sector, disk_size)
                return "gpt"
        raise Refused("GPT header is missing at LBA 1 (protective MBR without a GPT); refused")
    used = [entry for entry in entries if entry[4] != 0]
    if not flags_valid or not used:
        return "none"  # a volume boot record or boot code, not a partition table
    sectors = disk_size // MBR_BYTES
    for number, entry in enumerate(entries, start=1):
        if entry[4] == 0:
            continue
        start, count = struct.unpack_from("<II", entry, 8)
        if start == 0 or start + count > sectors:
            raise Refused(
                "MBR partition {number} lies outside the disk (sectors {start} to {end} of {sectors}); refused",
                number=number,
                start=start,
                end=start + count - 1,
                sectors=sectors,
            )
    return "mbr"


def _check_gpt(head: bytes, sector: int, disk_size: int) -> None:
    sectors = disk_size // sector
    header = head[sector : 2 * sector]
    (header_size,) = struct.unpack_from("<I", header, 12)
    if not 92 <= header_size <= sector:
        raise Refused("GPT header size {size} is invalid; refused", size=header_size)
    (stored_crc,) = struct.unpack_from("<I", header, 16)
    blank = header[:16] + b"\0\0\0\0" + header[20:header_size]
    if zlib.crc32(blank) != stored_crc:
        raise Refused("GPT header checksum is wrong; refused")
    my_lba, _alternate, first_usable, last_usable = struct.unpack_from("<QQQQ", header, 24)
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if my_lba != 1:
        raise Refused("GPT header names LBA {lba} as its own; refused", lba=my_lba)
    if not 2 <= first_usable <= last_usable < sectors:
        raise Refused(
            "GPT usable sectors {first} to {last} do not fit a disk of {sectors} sectors; refused",
            first=first_usable,
            last=last_usable,
            sectors=sectors,
        )
    if not 0 < count <= MAX_ENTRIES or entry_size < 128 or entry_size > MAX_ENTRY_SIZE or entry_size % 128:
        raise Refused(
            "GPT entry array of {count} entries of {size} bytes is invalid; refused", count=count, size=entry_size
        )
    array_bytes = count * entry_size
    array_end = entries_lba * sector + array_bytes
    if entries_lba < 2 or array_end > first_usable * sector or array_end > len(head):
        raise Refused(
            "GPT entry array at LBA {lba} overlaps the usable sectors or the header; refused", lba=entries_lba
        )
    array = head[entries_lba * sector : array_end]
    if len(array) != array_bytes or zlib.crc32(array) != entries_crc:
        raise Refused("GPT entry array checksum is wrong; refused")
    spans: list[tuple[int, int, int]] = []
    for index in range(count):
        entry = array[index * entry_size : (index + 1) * entry_size]
        if entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if not first_usable <= first <= last <= last_usable:
            raise Refused(
                "GPT partition {number} (sectors {first} to {last}) lies outside the usable sectors; refused",
                number=index + 1,
                first=first,
                last=last,
            )
        spans.append((first, last, index + 1))
    spans.sort()
    for (_first, last, number), (next_first, _next_last, next_number) in itertools.pairwise(spans):
        if next_first <= last:
            raise Refused("GPT partitions {a} and {b} overlap; refused", a=number, b=next_number)
