"""Format inspection from the bytes, before qemu-img touches a file (docs/security.md, B.2).

A small header parser in the manner of Glance's format_inspector: it never trusts a file name,
reads only bounded regions (headers, descriptors, region tables: at most `MAX_REGION` each), and
refuses what is dangerous or unclear:

- qcow2: versions other than 2 and 3, a backing file, an external data file (feature bit or header
  extension), unknown incompatible feature bits, encryption, the corrupt bit (CVE-2024-32498);
- vmdk: only monolithicSparse and streamOptimized with one SPARSE extent naming no other file, no
  parent, no unknown descriptor line; descriptor-only vmdks are refused (CVE-2022-47951); a
  streamOptimized footer must match its header;
- vhd (fixed, dynamic) and vhdx: differencing disks (parents) are refused;
- iso: detected at 32 KiB (ISO 9660, UDF), kept as is; ISO + GPT (hybrid boot media) is allowed;
- ova: an untrusted tar: regular members only, no absolute path, no `..`, exactly one `.ovf`
  parsed with defusedxml (no DTD, no entities), exactly one disk, which is inspected in turn;
- always refused: QED, LUKS, compressed files, web pages, a file matching two formats (polyglot),
  a file shorter than its header claims.

`qemu-img info` is then run with the detected format and must agree (`cross_check`); after
conversion the output is inspected again and must be exactly the target format (`check_output`).
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.catalog.errors import Failed
from core.disk import qemu

SECTOR = 512
MAX_REGION = 1 << 20  # bound on any descriptor or table read
MAX_OVA_MEMBERS = 64
MAX_OVF_SIZE = 1 << 20
GIB = 1 << 30

# Formats qemu-img is told explicitly (`-f`); ours -> qemu's name.
QEMU_NAME = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "iso": "raw"}
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx")


class Refused(Failed):
    """The file was inspected and refused; the message is the user's reason."""


@dataclass
class Inspection:
    """What the bytes say: the format, the virtual size and details (subformat, OVA member)."""

    format: str
    virtual_size: int
    file_size: int
    detail: dict[str, Any] = field(default_factory=dict)


def _u16le(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<H", b, o)[0])


def _u32le(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<I", b, o)[0])


def _u64le(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<Q", b, o)[0])


def _u32be(b: bytes, o: int) -> int:
    return int(struct.unpack_from(">I", b, o)[0])


def _u64be(b: bytes, o: int) -> int:
    return int(struct.unpack_from(">Q", b, o)[0])


class _Reader:
    """Bounded positional reads from the file being inspected."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if length > MAX_REGION:
            raise Refused("image header region is too large; refused")
        if offset < 0 or offset >= self.size:
            return b""
        return os.pread(self.fd, min(length, self.size - offset), offset)

    def need(self, offset: int, length: int) -> bytes:
        data = self.read(offset, length)
        if len(data) < length:
            raise Refused("file is shorter than its header claims (truncated?)")
        return data


def short() -> Refused:
    return Refused("file is shorter than its header claims (truncated?)")


# ---- detection --------------------------------------------------------------------------------

_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7z",
}
_ISO_IDS = (b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01")


def _matches(r: _Reader, head: bytes) -> list[str]:
    found: list[str] = []
    if head[:4] == b"QFI\xfb":
        found.append("qcow2")
    if head[:4] == b"QED\x00":
        found.append("qed")
    if head[:6] == b"LUKS\xba\xbe":
        found.append("luks")
    if head[:4] == b"KDMV" or head[:4] == b"COWD":
        found.append("vmdk")
    if head[:21] == b"# Disk DescriptorFile":
        found.append("vmdk-descriptor")
    if head[:8] == b"vhdxfile":
        found.append("vhdx")
    if head[:8] == b"conectix" or (r.size >= SECTOR and r.read(r.size - SECTOR, 8) == b"conectix"):
        found.append("vhd")
    for base in (0x8001, 0x8801, 0x9001):
        if r.read(base, 5) in _ISO_IDS:
            found.append("iso")
            break
    if len(head) >= 263 and head[257:262] == b"ustar":
        found.append("ova")
    if len(head) >= 520 and head[512:520] == b"EFI PART":
        found.append("gpt")
    return found


def detect(path: Path, *, source: bool = True) -> Inspection:
    """Detect and check the format of `path`; raise `Refused` with the user's reason.

    `source=False` (a converted output): raw is plain data, not checked for looking like a page."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        r = _Reader(fd, size)
        head = r.read(0, 64 * 1024)
        found = _matches(r, head)
        if "qed" in found:
            raise Refused("QED images are refused")
        if "luks" in found:
            raise Refused("LUKS-encrypted images are refused")
        formats = [f for f in found if f != "gpt"]
        if "gpt" in found and formats and formats != ["iso"]:
            formats.append("gpt")
        if len(formats) > 1:
            raise Refused("file matches several formats ({formats}); refused", formats=", ".join(formats))
        kind = formats[0] if formats else "raw"
        if kind == "qcow2":
            return _qcow2(r, head)
        if kind == "vmdk":
            return _vmdk(r, head)
        if kind == "vmdk-descriptor":
            raise Refused("vmdk descriptor files (extents in other files) are refused; import a single-file vmdk")
        if kind == "vhd":
            return _vhd(r, head)
        if kind == "vhdx":
            return _vhdx(r)
        if kind == "iso":
            return _iso(r)
        if kind == "ova":
            return _ova(r)
        return _raw(r, head) if source else Inspection("raw", r.size, r.size)
    finally:
        os.close(fd)


# ---- raw, iso -------------------------------------------------------------------------------


def _raw(r: _Reader, head: bytes) -> Inspection:
    if r.size == 0:
        raise Refused("unsupported format: the source is empty")
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            raise Refused("unsupported format: a {name}-compressed file; decompress it before importing", name=name)
    text = head[:512].lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        raise Refused("unsupported format: the source is a web page or text, not a disk image")
    if r.size % SECTOR:
        raise Refused("unsupported format: not a disk image (size is not a multiple of 512 bytes)")
    return Inspection("raw", r.size, r.size)


def _iso(r: _Reader) -> Inspection:
    pvd = r.read(0x8000, 2048)
    if len(pvd) >= 130 and pvd[0] == 1 and pvd[1:6] == b"CD001":
        blocks, block_size = _u32le(pvd, 80), _u16le(pvd, 128)
        if block_size not in (512, 1024, 2048, 4096):
            raise Refused("iso header is invalid; refused")
        if blocks * block_size > r.size:
            raise short()
    return Inspection("iso", r.size, r.size)


# ---- qcow2 ----------------------------------------------------------------------------------

_QCOW2_KNOWN_INCOMPAT = 0b11011  # dirty, corrupt, (data file: bit 2, refused), compression type, extended L2
_QCOW2_EXT_DATA_FILE = 0x44415441


def _qcow2(r: _Reader, head: bytes) -> Inspection:
    if len(head) < 72:
        raise short()
    version = _u32be(head, 4)
    if version not in (2, 3):
        raise Refused("qcow2 version {version} is refused (only versions 2 and 3)", version=version)
    if _u64be(head, 8) != 0:
        raise Refused("qcow2 backing file refused")
    cluster_bits = _u32be(head, 20)
    if not 9 <= cluster_bits <= 21:
        raise Refused("qcow2 header is invalid (cluster size); refused")
    cluster = 1 << cluster_bits
    virtual_size = _u64be(head, 24)
    if _u32be(head, 32) != 0:
        raise Refused("encrypted qcow2 images are refused")
    l1_size, l1_offset = _u32be(head, 36), _u64be(head, 40)
    refcount_offset, refcount_clusters = _u64be(head, 48), _u32be(head, 56)
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise short()
        incompat = _u64be(head, 72)
        if incompat & 0b100:
            raise Refused("qcow2 external data file refused")
        if incompat & ~_QCOW2_KNOWN_INCOMPAT:
            raise Refused("qcow2 with unknown incompatible features (0x{incompat:x}) refused", incompat=incompat)
        if incompat & 0b10:
            raise Refused("qcow2 marked corrupt refused")
        header_length = _u32be(head, 100)
        if header_length < 104 or header_length > cluster:
            raise Refused("qcow2 header is invalid (header length); refused")
    if r.size < header_length:
        raise short()
    if l1_offset + l1_size * 8 > r.size or refcount_offset + refcount_clusters * cluster > r.size:
        raise short()
    # Header extensions: an external data file may also be named there.
    offset = (header_length + 7) & ~7
    while offset + 8 <= min(cluster, len(head)):
        ext_type, ext_len = _u32be(head, offset), _u32be(head, offset + 4)
        if ext_type == 0:
            break
        if ext_type == _QCOW2_EXT_DATA_FILE:
            raise Refused("qcow2 external data file refused")
        offset += 8 + ((ext_len + 7) & ~7)
    return Inspection("qcow2", virtual_size, r.size, {"version": version, "cluster_size": cluster})


# ---- vmdk -----------------------------------------------------------------------------------

VMDK_ALLOWED_TYPES = ("monolithicSparse", "streamOptimized")
_GD_AT_END = 0xFFFFFFFFFFFFFFFF
_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]*)"(\s+\d+)?$')
_DESC_KEYS = ("version", "encoding", "CID", "parentCID", "createType", "isNativeSnapshot")
_DESC_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*(.*)$")


def _vmdk(r: _Reader, head: bytes) -> Inspection:
    if head[:4] != b"KDMV" or len(head) < SECTOR:
        raise Refused("vmdk of an old (COWD) kind is refused")
    version = _u32le(head, 4)
    if version not in (1, 2, 3):
        raise Refused("vmdk version {version} is refused", version=version)
    capacity = _u64le(head, 12)
    desc_offset, desc_size = _u64le(head, 28), _u64le(head, 36)
    gd_offset, overhead = _u64le(head, 56), _u64le(head, 64)
    if desc_offset == 0 or desc_size == 0:
        raise Refused("vmdk without an embedded descriptor is refused")
    if desc_size * SECTOR > MAX_REGION:
        raise Refused("vmdk descriptor is too large; refused")
    descriptor = r.need(desc_offset * SECTOR, desc_size * SECTOR).split(b"\x00", 1)[0]
    try:
        text = descriptor.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused("vmdk descriptor is not valid text; refused") from exc
    create_type, extents, parent = None, [], "ffffffff"
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _EXTENT.match(line)
        if extent:
            extents.append(extent)
            continue
        key = _DESC_KEY.match(line)
        if key and (key.group(1) in _DESC_KEYS or key.group(1).startswith("ddb.")):
            value = key.group(2).strip().strip('"')
            if key.group(1) == "createType":
                create_type = value
            elif key.group(1) == "parentCID":
                parent = value.lower()
            continue
        raise Refused("vmdk descriptor has a line that is not understood; refused")
    if create_type not in VMDK_ALLOWED_TYPES:
        raise Refused(
            "vmdk type {create_type} refused (only {allowed})",
            create_type=create_type,
            allowed=" and ".join(VMDK_ALLOWED_TYPES),
        )
    if parent != "ffffffff":
        raise Refused("vmdk with a parent disk refused")
    if not extents:
        raise Refused("vmdk descriptor names no extent; refused")
    if len(extents) > 1:
        raise Refused("vmdk with several extents refused")
    extent = extents[0]
    if extent.group(3) != "SPARSE" or "/" in extent.group(4) or "\\" in extent.group(4) or extent.group(5):
        raise Refused("vmdk extent in another file refused")
    if int(extent.group(2)) != capacity:
        raise Refused("vmdk descriptor does not match its header; refused")
    if overhead * SECTOR > r.size:
        raise short()
    if gd_offset == _GD_AT_END:
        if create_type != "streamOptimized":
            raise Refused("vmdk header is invalid; refused")
        if r.size < 3 * SECTOR:
            raise short()
        footer = r.need(r.size - 2 * SECTOR, SECTOR)
        if footer[:4] != b"KDMV" or _u64le(footer, 12) != capacity or _u64le(footer, 56) == _GD_AT_END:
            raise Refused("vmdk footer does not match its header; refused")
    elif gd_offset * SECTOR > r.size:
        raise short()
    return Inspection("vmdk", capacity * SECTOR, r.size, {"subformat": create_type})


# ---- vhd, vhdx ------------------------------------------------------------------------------


def _vhd(r: _Reader, head: bytes) -> Inspection:
    footer = head[:SECTOR] if head[:8] == b"conectix" else r.need(r.size - SECTOR, SECTOR)
    if len(footer) < SECTOR:
        raise short()
    disk_type = _u32be(footer, 60)
    current_size = _u64be(footer, 48)
    if disk_type == 4:
        raise Refused("vhd differencing disk refused")
    if disk_type == 2:
        if r.size - SECTOR < current_size:
            raise short()
        return Inspection("vhd", current_size, r.size, {"subformat": "fixed"})
    if disk_type != 3:
        raise Refused("vhd disk type {disk_type} refused", disk_type=disk_type)
    data_offset = _u64be(footer, 16)
    dyn = r.need(data_offset, 1024)
    if dyn[:8] != b"cxsparse":
        raise Refused("vhd dynamic header is invalid; refused")
    table_offset, entries = _u64be(dyn, 16), _u32be(dyn, 28)
    if table_offset + entries * 4 > r.size:
        raise short()
    if any(dyn[576 + i * 24 : 576 + i * 24 + 4] != b"\x00\x00\x00\x00" for i in range(8)):
        raise Refused("vhd with a parent locator refused")
    return Inspection("vhd", current_size, r.size, {"subformat": "dynamic"})


_VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
_VHDX_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
_VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
_VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le


def _vhdx(r: _Reader) -> Inspection:
    table = r.need(192 * 1024, 64 * 1024)
    if table[:4] != b"regi":
        raise Refused("vhdx region table is invalid; refused")
    count = _u32le(table, 8)
    if count > 2047:
        raise Refused("vhdx region table is invalid; refused")
    meta_offset = None
    for i in range(count):
        entry = table[16 + i * 32 : 48 + i * 32]
        if entry[:16] == _VHDX_METADATA_REGION:
            meta_offset = _u64le(entry, 16)
    if meta_offset is None:
        raise Refused("vhdx has no metadata region; refused")
    meta = r.need(meta_offset, 64 * 1024)
    if meta[:8] != b"metadata":
        raise Refused("vhdx metadata table is invalid; refused")
    entries = _u16le(meta, 10)
    if entries > 2047:
        raise Refused("vhdx metadata table is invalid; refused")
    virtual_size = None
    for i in range(entries):
        entry = meta[32 + i * 32 : 64 + i * 32]
        item, item_offset = entry[:16], _u32le(entry, 16)
        if item == _VHDX_PARENT_LOCATOR:
            raise Refused("vhdx differencing disk refused")
        if item == _VHDX_FILE_PARAMETERS and _u32le(r.need(meta_offset + item_offset, 8), 4) & 0b10:
            raise Refused("vhdx differencing disk refused")
        if item == _VHDX_VIRTUAL_SIZE:
            virtual_size = _u64le(r.need(meta_offset + item_offset, 8), 0)
    if virtual_size is None:
        raise Refused("vhdx has no virtual size; refused")
    return Inspection("vhdx", virtual_size, r.size)


# ---- ova ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int
    size: int


def _octal(field_bytes: bytes) -> int:
    text = field_bytes.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    if field_bytes[0] & 0x80:  # GNU base-256
        raise Refused("OVA member is too large; refused")
    try:
        return int(text, 8)
    except ValueError as exc:
        raise Refused("OVA is not a valid tar archive; refused") from exc


def tar_members(r: _Reader) -> list[TarMember]:
    """Walk a ustar archive with bounded memory; refuse anything but plain regular files."""
    members: list[TarMember] = []
    offset = 0
    long_name: str | None = None
    while True:
        header = r.read(offset, SECTOR)
        if len(header) < SECTOR:
            raise short()
        if header == bytes(SECTOR):
            return members
        if header[257:262] != b"ustar":
            raise Refused("OVA is not a valid tar archive; refused")
        checksum = _octal(header[148:156])
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):
            raise Refused("OVA tar header checksum is wrong; refused")
        size = _octal(header[124:136])
        kind = header[156:157]
        data_offset = offset + SECTOR
        if data_offset + size > r.size:
            raise short()
        if kind in (b"x", b"L"):
            if size > 64 * 1024:
                raise Refused("OVA tar header is too large; refused")
            data = r.need(data_offset, size)
            if kind == b"L":
                long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
            else:
                for record in _pax_records(data):
                    if record[0] == "path":
                        long_name = record[1]
        elif kind == b"g":
            pass
        else:
            name = long_name
            if name is None:
                prefix = header[345:500].split(b"\x00", 1)[0]
                base = header[:100].split(b"\x00", 1)[0]
                name = ((prefix + b"/" + base) if prefix else base).decode("utf-8", "replace")
            long_name = None
            while name.startswith("./"):
                name = name[2:]
            _check_member(name, kind)
            members.append(TarMember(name, data_offset, size))
            if len(members) > MAX_OVA_MEMBERS:
                raise Refused("OVA has too many members; refused")
        offset = data_offset + ((size + SECTOR - 1) // SECTOR) * SECTOR


def _pax_records(data: bytes) -> list[tuple[str, str]]:
    records = []
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError as exc:
            raise Refused("OVA tar header is invalid; refused") from exc
        if length <= 0:
            break
        record = data[space + 1 : pos + length - 1].decode("utf-8", "replace")
        key, _, value = record.partition("=")
        records.append((key, value))
        pos += length
    return records


def _check_member(name: str, kind: bytes) -> None:
    if kind not in (b"0", b"\x00", b"7"):
        what = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a device", b"4": "a device", b"5": "a folder"}
        raise Refused("OVA member {name!r} is {what}; refused", name=name, what=what.get(kind, "not a regular file"))
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise Refused("OVA member {name!r} has an unsafe path; refused", name=name)
    if "/" in name.strip("/") or "\\" in name:
        raise Refused("OVA member {name!r} is in a folder; refused", name=name)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(element: Any, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return str(value)
    return None


def parse_ovf(data: bytes, members: dict[str, TarMember]) -> TarMember:
    """The OVA member holding the boot disk, as the OVF makes clear; refuse anything unclear."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise Refused("OVF descriptor uses a DTD or entities; refused") from exc
    except ParseError as exc:
        raise Refused("OVF descriptor is not valid XML; refused") from exc
    files = {_attr(e, "id"): _attr(e, "href") for e in root.iter() if _local(e.tag) == "File"}
    disks = [e for e in root.iter() if _local(e.tag) == "Disk"]
    if not disks:
        raise Refused("OVF describes no disk; refused")
    if len(disks) > 1:
        raise Refused("OVA has {count} disks and the OVF does not make the boot disk clear; refused", count=len(disks))
    href = files.get(_attr(disks[0], "fileRef"))
    if not href or href not in members:
        raise Refused("OVF names a disk file that is not in the OVA; refused")
    return members[href]


def _ova(r: _Reader) -> Inspection:
    members = tar_members(r)
    by_name = {m.name: m for m in members}
    ovfs = [m for m in members if m.name.lower().endswith(".ovf")]
    if not ovfs:
        raise Refused("tar archive without an .ovf descriptor: not an OVA; refused")
    if len(ovfs) > 1:
        raise Refused("OVA with several .ovf descriptors refused")
    if ovfs[0].size > MAX_OVF_SIZE:
        raise Refused("OVF descriptor is too large; refused")
    disk = parse_ovf(r.need(ovfs[0].offset, ovfs[0].size), by_name)
    return Inspection("ova", 0, r.size, {"member": disk.name, "offset": disk.offset, "size": disk.size})


# ---- qemu-img cross-checks ------------------------------------------------------------------


def cross_check(path: Path, found: Inspection) -> Inspection:
    """Run `qemu-img info` with the detected format; it must agree with the header."""
    qemu_format = QEMU_NAME[found.format]
    try:
        info = qemu.info(path, qemu_format)
    except Failed as exc:
        detail = str(exc).replace(str(path), path.name)  # no server paths in the user's reason
        raise Refused(
            "{found_format} image is damaged or not what its header says ({detail})",
            found_format=found.format,
            detail=detail,
        ) from exc
    if info.get("format") != qemu_format:
        raise Refused(
            "format check failed: qemu-img sees {seen_format}, not {found_format}",
            seen_format=info.get("format"),
            found_format=found.format,
        )
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise Refused("{found_format} backing file refused", found_format=found.format)
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise Refused("qcow2 external data file refused")
    extents = data.get("extents") or []
    if len(extents) > 1 or any(e.get("filename") not in (None, str(path)) for e in extents):
        raise Refused("vmdk extent in another file refused")
    size = int(info.get("virtual-size") or 0)
    if found.format == "vhd":
        # qemu derives a VHD's size from its CHS geometry unless the creator is known: never larger.
        if size > found.virtual_size or size < found.virtual_size - 64 * 1024 * 1024:
            raise Refused("format check failed: qemu-img disagrees with the vhd header about the size")
    elif size != found.virtual_size:
        raise Refused(
            "format check failed: qemu-img disagrees with the {found_format} header about the size",
            found_format=found.format,
        )
    found.virtual_size = size
    return found


def check_target(found: Inspection, target_bytes: int) -> None:
    if found.virtual_size > target_bytes:
        shown, target = _gib(found.virtual_size), _gib(target_bytes)
        if shown.split()[0].split(".")[0] == target.split()[0]:  # "20.00 GB exceeds 20 GB" says nothing
            shown, target = f"{found.virtual_size} bytes", f"{target_bytes} bytes ({target})"
            hint = "; choose a larger target size"
            raise Refused(
                "virtual size {shown} exceeds target size {target}{hint}", shown=shown, target=target, hint=hint
            )
        raise Refused("virtual size {shown} exceeds target size {target}", shown=shown, target=target)


def check_output(path: Path, store_format: str, expected_size: int) -> None:
    """The converted file must be exactly the store format, of the expected size, nothing hidden in it."""
    try:
        found = detect(path, source=False)
    except Refused as exc:
        raise Refused("converted image failed inspection: {exc}", exc=exc) from exc
    if found.format != store_format:
        raise Refused(
            "converted image is not plain {store_format} (it looks like {found_format}); refused",
            store_format=store_format,
            found_format=found.format,
        )
    try:
        info = qemu.info(path, store_format)
    except Failed as exc:
        raise Refused("converted image failed inspection: qemu-img cannot read it") from exc
    if info.get("format") != store_format or int(info.get("virtual-size") or 0) != expected_size:
        raise Refused("converted image failed inspection: wrong format or size")


def _gib(size: int) -> str:
    """GB as --size-gb counts them (1024³ bytes), the unit every size is shown in (core.rules.display)."""
    value = size / GIB
    return f"{value:.0f} GB" if value == int(value) else f"{value:.2f} GB"
