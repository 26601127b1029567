"""core.disk.convert: the one qemu-img convert runner (real qemu-img, small sparse images made here)."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from core.catalog.errors import Failed
from core.disk import convert
from core.disk.convert import Limits
from tests.vmdata import MIB, qemu_io


class Cancelled(Exception):
    """What a job's heartbeat raises once its lease is lost."""


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False, timeout=60)


def same_disk(a: Path, a_format: str, b: Path, b_format: str) -> bool:
    return qemu_img("compare", "-f", a_format, "-F", b_format, str(a), str(b)).returncode == 0


def patterned(path: Path, fmt: str, size: int = 64 * MIB) -> Path:
    """A sparse disk of `size` with a few MiB of data scattered through it."""
    assert qemu_img("create", "-q", "-f", fmt, str(path), str(size)).returncode == 0
    for n, offset in enumerate(range(0, size, size // 8)):
        qemu_io(path, fmt, f"write -P {0x10 + n:#x} {offset} 1M")
    return path


def corrupt_qcow2(path: Path) -> Path:
    """A qcow2 whose cluster at 32 MiB points at an unaligned offset: qemu-img fails reading it,
    after it has created (and partly written) its output."""
    patterned(path, "qcow2")
    data = bytearray(path.read_bytes())
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FFFFFFFFFFFE00
    entry = l2_offset + 8 * (32 * MIB // 65536)
    struct.pack_into(">Q", data, entry, struct.unpack_from(">Q", data, entry)[0] + 512)
    path.write_bytes(data)
    return path


def has_reader(fifo: Path) -> bool:
    """Whether some process has `fifo` open for reading (a writer may then open it without blocking)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO
        return False
    os.close(fd)
    return True


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "var" / "staging"
    folder.mkdir(parents=True)
    return folder


def test_qcow2_to_raw_and_raw_to_qcow2_give_the_same_disk(staging: Path) -> None:
    source = patterned(staging / "source.qcow2", "qcow2")
    raw = staging / "out.raw"
    convert.convert(source, "qcow2", raw, "raw")
    assert same_disk(source, "qcow2", raw, "raw")
    assert raw.stat().st_size == 64 * MIB and raw.stat().st_blocks * 512 < 32 * MIB  # holes kept

    back = staging / "back.qcow2"
    convert.convert(raw, "raw", back, "qcow2", options=["-o", "cluster_size=65536"])
    assert qemu_img("info", "--output=json", "-f", "qcow2", str(back)).returncode == 0
    assert same_disk(raw, "raw", back, "qcow2")


def test_progress_rises_and_ends_at_one(staging: Path) -> None:
    source = patterned(staging / "source.qcow2", "qcow2", size=256 * MIB)
    seen: list[float] = []
    convert.convert(source, "qcow2", staging / "out.raw", "raw", on_progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0.0 < fraction <= 1.0 for fraction in seen)


def test_the_progress_pattern_reads_qemu_imgs_own_output(staging: Path) -> None:
    source = patterned(staging / "source.qcow2", "qcow2")
    done = subprocess.run(
        ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "raw", str(source), str(staging / "out.raw")],
        capture_output=True,
        check=True,
        timeout=60,
    )
    found = convert.percentages(done.stdout)
    assert len(found) > 2 and found == sorted(found) and found[-1] == 100.0


def test_the_source_format_is_given_never_probed(staging: Path) -> None:
    """A raw disk whose bytes look like a qcow2 is converted as the raw disk it was said to be."""
    looks_like_qcow2 = staging / "disk.raw"
    assert qemu_img("create", "-q", "-f", "qcow2", str(looks_like_qcow2), str(64 * MIB)).returncode == 0
    output = staging / "out.qcow2"
    convert.convert(looks_like_qcow2, "raw", output, "qcow2")
    virtual_size = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(output)).stdout)["virtual-size"]
    assert virtual_size == -(-looks_like_qcow2.stat().st_size // 512) * 512  # the file's bytes, not 64 MiB
    assert same_disk(looks_like_qcow2, "raw", output, "qcow2")


def test_a_blocked_conversion_is_killed_at_its_deadline(staging: Path) -> None:
    fifo = staging / "source.raw"
    os.mkfifo(fifo)  # nobody writes: qemu-img waits for ever
    output = staging / "out.raw"
    with pytest.raises(Failed, match=r"^conversion took too long; stopped$"):
        convert.convert(fifo, "raw", output, "raw", timeout=0.5)
    assert not output.exists()
    assert not has_reader(fifo)  # qemu-img is gone


def test_the_time_limit_follows_the_settings(staging: Path) -> None:
    source = patterned(staging / "source.qcow2", "qcow2")
    output = staging / "out.raw"
    with pytest.raises(Failed, match="took too long"):
        convert.convert(source, "qcow2", output, "raw", limits=Limits(base_seconds=0, min_mib_per_second=1e12))
    assert not output.exists()
    allowed = Limits(base_seconds=60, min_mib_per_second=1).seconds_for_files(source)
    assert allowed == 60 + source.stat().st_blocks * 512 / MIB


def test_a_failing_heartbeat_kills_qemu_img_and_propagates(staging: Path) -> None:
    fifo = staging / "source.raw"
    os.mkfifo(fifo)
    output = staging / "out.raw"
    beats: list[bool] = []

    def lease_lost() -> None:
        assert has_reader(fifo)  # qemu-img is waiting on its source
        beats.append(True)
        raise Cancelled

    with pytest.raises(Cancelled):
        convert.convert(fifo, "raw", output, "raw", heartbeat=lease_lost, heartbeat_seconds=0.05, timeout=60)
    assert beats == [True]
    assert not output.exists()
    assert not has_reader(fifo)


def test_a_failed_conversion_removes_its_partial_output_and_names_no_server_path(staging: Path) -> None:
    source = corrupt_qcow2(staging / "broken.qcow2")
    alone = staging / "alone.raw"
    assert qemu_img("convert", "-f", "qcow2", "-O", "raw", str(source), str(alone)).returncode == 1
    assert alone.is_file()  # qemu-img by itself leaves what it wrote
    output = staging / "out.raw"

    with pytest.raises(Failed) as caught:
        convert.convert(source, "qcow2", output, "raw")

    assert str(caught.value).startswith("qemu-img convert failed: error while reading block status")
    assert str(staging) not in str(caught.value)
    assert not output.exists()


def test_error_texts_name_files_not_the_servers_folders(staging: Path, tmp_path: Path) -> None:
    data_dir = staging.parent
    not_qcow2 = staging / "upload.qcow2"
    not_qcow2.write_bytes(b"this is no disk image" * 100)
    with pytest.raises(Failed) as caught:
        convert.convert(not_qcow2, "qcow2", staging / "out.raw", "raw", scrub_paths=[data_dir])
    assert "upload.qcow2" in str(caught.value) and str(tmp_path) not in str(caught.value)

    # A backing file elsewhere under the data folder (a VM's base image) is named from there.
    base = data_dir / "images" / "img-base.raw"
    overlay = data_dir / "vms" / "vm-1" / "disk.qcow2"
    base.parent.mkdir()
    overlay.parent.mkdir(parents=True)
    assert qemu_img("create", "-q", "-f", "raw", str(base), str(MIB)).returncode == 0
    made = qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay))
    assert made.returncode == 0, made.stderr
    base.unlink()
    with pytest.raises(Failed) as caught:
        convert.convert(overlay, "qcow2", staging / "out.raw", "raw", scrub_paths=[data_dir])
    assert "images/img-base.raw" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    assert not (staging / "out.raw").exists()


def test_too_little_memory_fails_with_a_clean_reason(staging: Path) -> None:
    source = patterned(staging / "source.qcow2", "qcow2")
    output = staging / "out.raw"
    with pytest.raises(Failed) as caught:
        convert.convert(source, "qcow2", output, "raw", limits=Limits(memory_mb=16))
    assert str(caught.value) == "qemu-img convert ran out of memory (limit 16 MiB)"
    assert not output.exists()


def test_scrub_cuts_folders_down_to_what_lies_below_them() -> None:
    text = "Could not open '/srv/var/images/a.raw' nor '/srv/var/staging/b.qcow2' in /srv/var"
    assert convert.scrub(text, [Path("/srv/var")]) == "Could not open 'images/a.raw' nor 'staging/b.qcow2' in var"
    assert convert.scrub(text, [Path("/srv/var/images/a.raw"), Path("/srv/var")]).startswith("Could not open 'a.raw'")
