"""Is it a disk at all (docs/security.md F14)? A text file, an HTML error page or megabytes of zeros are
valid "raw" images to qemu-img; imported, they would end `available` as an empty 20 GiB disk.

A disk must carry a partition table (MBR or GPT), a file system or volume signature, or a boot
sector. libblkid decides the first two (`blkid -p`, util-linux: its probers, not a list kept
here), run like qemu-img under CPU, memory and time limits; a boot sector is the one signature
checked here: 55 AA at byte 510 of sector 0. A raw source is probed as it is, before conversion;
any other format after conversion, as the guest will see it: the converted raw file itself, or for
a qcow2 store the disk's first MiB (already read for the partition-table check) laid in a sparse
file of the disk's size, so that probers looking at the end see a disk of the right size (a
signature found only past the first MiB, such as an md 0.90 superblock, is missed there). An ISO is
known by its volume descriptor at inspection and kept as it is. `import.require_disk_structure =
false` turns the check off.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from core.catalog.errors import Failed
from core.disk import qemu
from core.importer.inspect import Refused

BLKID = "blkid"
BLKID_CPU_SECONDS = 2
BLKID_ADDRESS_SPACE = 1 << 30
BOOT_SIGNATURE = b"\x55\xaa"
# blkid's exit status: 0 found, 2 nothing found, 8 ambivalent (several signatures: still a disk)
_FOUND = (0, 8)
_NOTHING = 2


def probe(path: Path) -> dict[str, str]:
    """What libblkid finds on the raw disk `path` (TYPE, PTTYPE, USAGE, ...); empty if nothing."""
    done = qemu.run_limited(
        [BLKID, "-p", "-o", "export", "--", str(path)],
        cpu_seconds=BLKID_CPU_SECONDS,
        address_space=BLKID_ADDRESS_SPACE,
        timeout=30,
        scrub=[path],
    )
    if done.returncode == _NOTHING:
        return {}
    if done.returncode not in _FOUND:
        raise Failed("blkid failed: {message}", message=done.first_line())
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key and key != "DEVNAME":
            found[key] = value
    return found or {"AMBIVALENT": "yes"}


def has_boot_sector(head: bytes) -> bool:
    return head[510:512] == BOOT_SIGNATURE


def check_raw(path: Path) -> str:
    """Refuse the raw disk `path` unless it carries a structure; returns what was found."""
    found = probe(path)
    if found:
        return found.get("PTTYPE") or found.get("TYPE") or "signature"
    with open(path, "rb", buffering=0) as handle:
        if has_boot_sector(os.pread(handle.fileno(), 512, 0)):
            return "boot sector"
    raise Refused("not a disk image: no partition table, file system or boot sector found")


def mbr(disk_bytes: int) -> bytes:
    """A minimal MBR: one Linux partition from 1 MiB to the end of a disk of `disk_bytes` (the
    structure a blank disk made for the demo or a test carries)."""
    sectors = disk_bytes // 512
    start = 2048 if sectors > 2048 else 1
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", start, max(sectors - start, 1))
    return bytes(446) + entry + bytes(48) + BOOT_SIGNATURE


def check_disk(path: Path, fmt: str, disk_size: int, head: bytes) -> str:
    """Refuse the converted disk `path` (in `fmt`, `head` its first bytes) unless it carries a structure."""
    if fmt == "raw":
        return check_raw(path)
    with tempfile.TemporaryDirectory(prefix="imagehub-probe-", dir=path.parent) as folder:
        copy = Path(folder) / "head.raw"
        with open(copy, "wb") as handle:
            handle.write(head)
            handle.truncate(max(disk_size, len(head)))
        return check_raw(copy)
