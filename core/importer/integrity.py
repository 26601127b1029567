"""Damaged or truncated sources (docs/security.md F13), checked before conversion.

qemu-img reads a cluster mapped past the end of a file as zeros, so a truncated or damaged image
converts without a word and the stored disk silently differs from its source. Three checks, each
refusing with "damaged or truncated" and what was found:

- the mapping tables, read here with bounded memory: qcow2's L1 and refcount tables, the vmdk
  grain directory, the vhd and vhdx block allocation tables (each block, and its bitmap), the
  vhdx regions: no table may point past the end of the file (qemu-img info cannot even open a
  vhd or vhdx whose blocks lie past the end, so these are read here, before it runs);
- `qemu-img check` for the formats it supports (qcow2, vmdk, vhdx): corruptions (exit 2) or a
  check that cannot finish (exit 1, which vmdk gives for a grain past the end) refuse; leaked
  clusters alone (exit 3) do not;
- `qemu-img map`, streamed: no data extent (a qcow2 L2 entry, a vmdk grain, a vhd or vhdx block)
  may end past the end of the file.

The import runs them in that order, `inspect.cross_check` (qemu-img info) after the first, so
that a truncation is named as one rather than as a file qemu-img cannot open. Raw sources map onto
themselves and have nothing to check; an ISO is kept as it is.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import uuid
from array import array
from collections.abc import Iterator
from pathlib import Path

from core.catalog.errors import Msg
from core.disk import qemu
from core.importer.inspect import MAX_REGION, QEMU_NAME, SECTOR, Refused

log = logging.getLogger("imagehub.import")

CHECKED_FORMATS = ("qcow2", "vmdk", "vhd", "vhdx")
_QCOW2_OFFSET = 0x00FFFFFFFFFFFE00  # bits 9-55 of an L1 or refcount table entry
_UNUSED_BAT = 0xFFFFFFFF
_GD_AT_END = 0xFFFFFFFFFFFFFFFF
_VHDX_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
_VHDX_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
_VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
_VHDX_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le


def past_end(what: Msg, end: int, size: int) -> Refused:
    return Refused(
        "damaged or truncated: {what} points past the end of the file (at byte {end}, file is {size} bytes)",
        what=what,
        end=end,
        size=size,
    )


def data_past_end(end: int, size: int) -> Refused:
    return Refused(
        "damaged or truncated: data mapped past the end of the file (at byte {end}, file is {size} bytes)",
        end=end,
        size=size,
    )


# ---- the tables, read here ------------------------------------------------------------------


def _entries(fd: int, offset: int, count: int, code: str, big_endian: bool) -> Iterator[array[int]]:
    """A table of `count` integers at `offset`, in arrays of at most MAX_REGION bytes."""
    width = array(code).itemsize
    done = 0
    while done < count:
        want = min(count - done, MAX_REGION // width)
        data = os.pread(fd, want * width, offset + done * width)
        if len(data) < want * width:
            raise Refused("file is shorter than its header claims (truncated?)")
        values = array(code, data)
        if big_endian == (struct.pack("=H", 1) == b"\x01\x00"):
            values.byteswap()
        yield values
        done += want


def check_tables(path: Path, fmt: str) -> None:
    """No mapping table entry may point past the end of the file."""
    if fmt not in CHECKED_FORMATS:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 64 * 1024, 0)
        if fmt == "qcow2":
            _qcow2(fd, head, size)
        elif fmt == "vmdk":
            _vmdk(fd, head, size)
        elif fmt == "vhd":
            _vhd(fd, head, size)
        elif fmt == "vhdx":
            _vhdx(fd, size)
    finally:
        os.close(fd)


def _qcow2(fd: int, head: bytes, size: int) -> None:
    cluster = 1 << struct.unpack_from(">I", head, 20)[0]
    l1_size, l1_offset, refcount_offset, refcount_clusters = struct.unpack_from(">IQQI", head, 36)
    tables = (
        (Msg("the qcow2 L1 table"), l1_offset, l1_size),
        (Msg("the qcow2 refcount table"), refcount_offset, refcount_clusters * cluster // 8),
    )
    for what, offset, count in tables:
        for values in _entries(fd, offset, count, "Q", big_endian=True):
            furthest = max((v & _QCOW2_OFFSET for v in values), default=0)
            if furthest and furthest + cluster > size:
                raise past_end(what, furthest + cluster, size)


def _vmdk(fd: int, head: bytes, size: int) -> None:
    capacity, grain, _desc_offset, _desc_size, per_table = struct.unpack_from("<QQQQI", head, 12)
    redundant, directory = struct.unpack_from("<QQ", head, 48)
    if directory == _GD_AT_END:  # streamOptimized: the footer holds the real one
        footer = os.pread(fd, SECTOR, size - 2 * SECTOR)
        redundant, directory = struct.unpack_from("<QQ", footer, 48)
    if grain == 0 or per_table == 0:
        raise Refused("vmdk header is invalid; refused")
    count = -(-capacity // (grain * per_table))
    table_bytes = per_table * 4
    for start in (directory, redundant):
        if start == 0:
            continue
        if start * SECTOR + count * 4 > size:
            raise past_end(Msg("the vmdk grain directory"), start * SECTOR + count * 4, size)
        for values in _entries(fd, start * SECTOR, count, "I", big_endian=False):
            furthest = max(values, default=0)
            if furthest and furthest * SECTOR + table_bytes > size:
                raise past_end(Msg("the vmdk grain directory"), furthest * SECTOR + table_bytes, size)


def _vhd(fd: int, head: bytes, size: int) -> None:
    footer = head[:SECTOR] if head[:8] == b"conectix" else os.pread(fd, SECTOR, size - SECTOR)
    if struct.unpack_from(">I", footer, 60)[0] != 3:
        return  # fixed: the data is the file, the footer follows it (inspection checked the size)
    dynamic = os.pread(fd, 1024, struct.unpack_from(">Q", footer, 16)[0])
    (table_offset,) = struct.unpack_from(">Q", dynamic, 16)
    entries, block_size = struct.unpack_from(">II", dynamic, 28)
    bitmap = -(-block_size // SECTOR // 8 // SECTOR) * SECTOR
    for values in _entries(fd, table_offset, entries, "I", big_endian=True):
        used = [v for v in values if v != _UNUSED_BAT]
        furthest = max(used, default=None)
        if furthest is not None and furthest * SECTOR + bitmap + block_size > size:
            raise data_past_end(furthest * SECTOR + bitmap + block_size, size)


def _vhdx(fd: int, size: int) -> None:
    table = os.pread(fd, 64 * 1024, 192 * 1024)
    count = struct.unpack_from("<I", table, 8)[0]
    bat = metadata = None
    for index in range(min(count, 2047)):
        entry = table[16 + index * 32 : 48 + index * 32]
        offset, length = struct.unpack_from("<QI", entry, 16)
        if entry[:16] not in (_VHDX_BAT, _VHDX_METADATA):
            continue
        if offset + length > size:
            what = Msg("the vhdx block allocation table") if entry[:16] == _VHDX_BAT else Msg("the vhdx metadata")
            raise past_end(what, offset + length, size)
        if entry[:16] == _VHDX_BAT:
            bat = (offset, length)
        else:
            metadata = offset
    if bat is None or metadata is None:
        return  # inspection found the metadata; qemu-img refuses a vhdx without a BAT
    items = _vhdx_items(fd, metadata)
    block_size = items.get(_VHDX_FILE_PARAMETERS, 0)
    sector_size = items.get(_VHDX_LOGICAL_SECTOR, 0)
    if block_size < (1 << 20) or sector_size not in (512, 4096):
        raise Refused("vhdx metadata table is invalid; refused")
    # every chunk_ratio payload entries, one sector bitmap entry (1 MiB); states 6 and 7 are in the file
    chunk_ratio = (1 << 23) * sector_size // block_size
    index = 0
    for values in _entries(fd, bat[0], bat[1] // 8, "Q", big_endian=False):
        for value in values:
            if value & 7 in (6, 7):
                bitmap = (index + 1) % (chunk_ratio + 1) == 0
                end = (value >> 20 << 20) + ((1 << 20) if bitmap else block_size)
                if end > size:
                    raise data_past_end(end, size)
            index += 1


def _vhdx_items(fd: int, metadata: int) -> dict[bytes, int]:
    """The first 32-bit value of each metadata item (block size, logical sector size)."""
    table = os.pread(fd, 64 * 1024, metadata)
    found = {}
    for index in range(min(struct.unpack_from("<H", table, 10)[0], 2047)):
        entry = table[32 + index * 32 : 64 + index * 32]
        if len(entry) == 32:
            value = os.pread(fd, 4, metadata + struct.unpack_from("<I", entry, 16)[0])
            if len(value) == 4:
                found[entry[:16]] = struct.unpack_from("<I", value)[0]
    return found


# ---- qemu-img check and map -----------------------------------------------------------------


def check_with_qemu(path: Path, fmt: str) -> None:
    """`qemu-img check`: corruptions refuse, leaked clusters alone do not."""
    qemu_format = QEMU_NAME.get(fmt, "")
    if fmt not in CHECKED_FORMATS or qemu_format not in qemu.CHECK_FORMATS:
        return
    done = qemu.check(path, qemu_format)
    if done.returncode in (0, 63):
        return
    if done.returncode == 3:
        log.info("%s: qemu-img check found leaked clusters only (space, not data); accepted", path.name)
        return
    if done.returncode == 2:
        corruptions = _count(done.stdout, "corruptions")
        raise Refused(
            "damaged or truncated: qemu-img check found corruption (errors: {count}; first: {detail})",
            count=corruptions,
            detail=done.first_line("ERROR"),
        )
    raise Refused("damaged or truncated: qemu-img check could not finish ({detail})", detail=done.first_line("ERROR"))


def _count(report: str, key: str) -> int:
    try:
        return int(json.loads(report).get(key) or 0) or 1
    except (ValueError, AttributeError):
        return 1


def check_mapping(path: Path, fmt: str) -> None:
    """`qemu-img map`: every data extent lies inside the file."""
    if fmt not in CHECKED_FORMATS:
        return
    size = path.stat().st_size

    def extent(length: int, offset: int | None) -> None:
        if offset is not None and offset + length > size:
            raise data_past_end(offset + length, size)

    qemu.map_extents(path, QEMU_NAME[fmt], extent)
