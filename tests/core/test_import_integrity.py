"""Damaged or truncated sources (checklist F13): a source cut short, or whose mapping tables point
past the end of the file, ends `import_failed` with "damaged or truncated" and what was found,
nothing left behind; leaked clusters alone (qemu-img check's exit 3) still import.

The fixtures are real images made by qemu-img from random data behind an MBR, then cut or patched
here. A fixed VHD cut short is not among them: without its footer it is a raw disk, and is taken
for one."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.disk import qemu
from core.importer import integrity
from core.importer.inspect import Refused
from tests.conftest import People
from tests.importkit import import_and_wait, leftovers, qemu_img, random_raw

QCOW2_OFFSET = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63


def converted(folder: Path, fmt: str, options: str = "", mib: int = 24) -> Path:
    """A disk of `mib` MiB of random data behind an MBR, converted to `fmt` (qemu's name)."""
    raw = random_raw(folder, f"data-{mib}.raw", mib)
    path = folder / f"source-{fmt}-{options.replace('=', '-') or 'default'}.{fmt}"
    qemu_img("convert", "-q", "-f", "raw", "-O", fmt, *(["-o", options] if options else []), str(raw), str(path))
    return path


def cut_to_a_third(path: Path) -> Path:
    os.truncate(path, path.stat().st_size // 3 // 512 * 512)
    return path


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), length, offset)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        os.pwrite(handle.fileno(), data, offset)


def qcow2_layout(path: Path) -> tuple[int, int, int]:
    """(cluster size, offset of the first L1 entry, offset of the first L2 table)."""
    head = read_at(path, 0, 512)
    cluster = 1 << struct.unpack_from(">I", head, 20)[0]
    l1_offset = struct.unpack_from(">Q", head, 40)[0]
    l2_offset = struct.unpack_from(">Q", read_at(path, l1_offset, 8), 0)[0] & QCOW2_OFFSET
    return cluster, l1_offset, l2_offset


def assert_refused(catalog: Catalog, people: People, source: Path, start: str) -> str:
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.IMPORT_FAILED, image.error
    assert image.error is not None and image.error.startswith(start), image.error
    assert str(catalog.store.data_dir) not in image.error and str(source.parent) not in image.error
    assert image.disk_format is None and image.sha256 is None
    assert leftovers(catalog) == []
    return image.error


# ---- truncation, every format --------------------------------------------------------------

TRUNCATED = [
    ("qcow2", "compat=0.10"),
    ("qcow2", "compat=1.1"),
    ("vmdk", "subformat=monolithicSparse"),
    ("vmdk", "subformat=streamOptimized"),
    ("vpc", "subformat=dynamic"),
    ("vhdx", ""),
]


@pytest.mark.parametrize(("fmt", "options"), TRUNCATED, ids=[f"{f}-{o or 'default'}" for f, o in TRUNCATED])
def test_f13_an_image_cut_to_a_third_is_refused_as_damaged_or_truncated(
    catalog: Catalog, people: People, tmp_path: Path, fmt: str, options: str
) -> None:
    source = cut_to_a_third(converted(tmp_path, fmt, options))
    assert_refused(catalog, people, source, "damaged or truncated: ")


def test_f13_the_truncated_qcow2_reason_says_what_qemu_img_check_found(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = cut_to_a_third(converted(tmp_path, "qcow2"))
    error = assert_refused(catalog, people, source, "damaged or truncated: qemu-img check found corruption (errors: ")
    assert "exceeding the end of the file" in error


# ---- tables patched to point past the end --------------------------------------------------


def test_f13_a_qcow2_l2_entry_past_the_end_is_refused(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = converted(tmp_path, "qcow2")
    cluster, _l1, l2 = qcow2_layout(source)
    size = source.stat().st_size
    beyond = (size // cluster + 100) * cluster
    write_at(source, l2 + 8, struct.pack(">Q", COPIED | beyond))  # guest cluster 1: its data past the end
    with pytest.raises(Refused) as caught:
        integrity.check_mapping(source, "qcow2")
    assert str(caught.value) == (
        f"damaged or truncated: data mapped past the end of the file (at byte {beyond + cluster}, file is {size} bytes)"
    )
    assert_refused(catalog, people, source, "damaged or truncated: ")


def test_f13_a_qcow2_l1_entry_past_the_end_is_refused(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = converted(tmp_path, "qcow2")
    cluster, l1, _l2 = qcow2_layout(source)
    size = source.stat().st_size
    beyond = (size // cluster + 7) * cluster
    write_at(source, l1, struct.pack(">Q", COPIED | beyond))
    assert_refused(
        catalog,
        people,
        source,
        f"damaged or truncated: the qcow2 L1 table points past the end of the file "
        f"(at byte {beyond + cluster}, file is {size} bytes)",
    )


def test_f13_a_qcow2_with_a_wrong_refcount_is_refused_by_qemu_img_check(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = converted(tmp_path, "qcow2")
    cluster, _l1, l2 = qcow2_layout(source)
    host_cluster = (struct.unpack_from(">Q", read_at(source, l2 + 8, 8))[0] & QCOW2_OFFSET) // cluster
    refblock = struct.unpack_from(">Q", read_at(source, struct.unpack_from(">Q", read_at(source, 48, 8))[0], 8))[0]
    write_at(source, refblock + 2 * host_cluster, b"\0\0")  # 16-bit refcounts: a cluster in use counted as free
    assert qemu.check(source, "qcow2").returncode == 2
    error = assert_refused(catalog, people, source, "damaged or truncated: qemu-img check found corruption (errors: ")
    assert "refcount=0 reference=1" in error


def test_f13_a_qcow2_with_only_leaked_clusters_is_imported(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = converted(tmp_path, "qcow2")
    _cluster, _l1, l2 = qcow2_layout(source)
    write_at(source, l2 + 8, bytes(8))  # guest cluster 1 unmapped, its host cluster still counted: a leak
    assert qemu.check(source, "qcow2").returncode == 3
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.AVAILABLE, image.error
    assert leftovers(catalog) == [f"images/{image.id}.raw"]


def vhd_bat(path: Path) -> tuple[int, int]:
    """(offset of the block allocation table, block size) of a dynamic VHD."""
    footer = read_at(path, 0, 512)
    dynamic = read_at(path, struct.unpack_from(">Q", footer, 16)[0], 1024)
    return struct.unpack_from(">Q", dynamic, 16)[0], struct.unpack_from(">I", dynamic, 32)[0]


def test_f13_a_vhd_block_past_the_end_is_refused(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = converted(tmp_path, "vpc", "subformat=dynamic")
    table, block = vhd_bat(source)
    size = source.stat().st_size
    sector = (size // 512) + 4096
    write_at(source, table + 4, struct.pack(">I", sector))  # block 1
    assert_refused(
        catalog,
        people,
        source,
        "damaged or truncated: data mapped past the end of the file "
        f"(at byte {sector * 512 + 512 + block}, file is {size} bytes)",
    )


def test_f13_a_vmdk_grain_table_past_the_end_is_refused(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = converted(tmp_path, "vmdk", "subformat=monolithicSparse")
    head = read_at(source, 0, 512)
    per_table = struct.unpack_from("<I", head, 44)[0]
    directory = struct.unpack_from("<Q", head, 56)[0] * 512
    size = source.stat().st_size
    sector = size // 512 + 100
    write_at(source, directory, struct.pack("<I", sector))
    assert_refused(
        catalog,
        people,
        source,
        "damaged or truncated: the vmdk grain directory points past the end of the file "
        f"(at byte {sector * 512 + per_table * 4}, file is {size} bytes)",
    )


def test_f13_intact_images_of_every_checked_format_pass(tmp_path: Path) -> None:
    from core.importer import inspect

    for fmt, options in TRUNCATED:
        source = converted(tmp_path, fmt, options, mib=4)
        found = inspect.detect(source)
        integrity.check_tables(source, found.format)
        integrity.check_with_qemu(source, found.format)
        integrity.check_mapping(source, found.format)


# ---- the runner ----------------------------------------------------------------------------


def test_f13_a_tool_printing_a_line_per_bad_cluster_cannot_grow_the_process(tmp_path: Path) -> None:
    done = qemu.run_limited(
        ["sh", "-c", "yes 'ERROR: cluster points after EOF' | head -c 8000000 >&2; exit 2"],
        cpu_seconds=5,
        address_space=1 << 30,
        timeout=30,
    )
    assert done.returncode == 2 and done.truncated
    assert len(done.stderr) <= qemu.MAX_OUTPUT
    assert done.first_line("ERROR") == "ERROR: cluster points after EOF"


def test_f13_a_tool_past_its_time_is_stopped(tmp_path: Path) -> None:
    from core.catalog.errors import Failed

    with pytest.raises(Failed, match="^sleep timed out$"):
        qemu.run_limited(["sleep", "30"], cpu_seconds=5, address_space=1 << 30, timeout=0.5)
