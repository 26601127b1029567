"""Every refusal ends `import_failed` with its reason, and nothing is left in staging or the store."""

from __future__ import annotations

import gzip
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from tests.conftest import People
from tests.importkit import import_and_wait, leftovers, make_disk, make_iso, make_ova, ovf_text, qemu_img, sha256_of


def patch(path: Path, offset: int, data: bytes) -> Path:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    return path


def qcow2_backing(tmp: Path) -> Path:
    base = make_disk(tmp, "qcow2", pattern=False)
    over = tmp / "over.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(over))
    return over


def qcow2_data_file(tmp: Path) -> Path:
    path = tmp / "ext.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp / 'ext.data'}", str(path), "64M")
    return path


def qcow2_unknown_feature(tmp: Path) -> Path:
    return patch(make_disk(tmp, "qcow2", pattern=False), 72, struct.pack(">Q", 1 << 10))


def qcow2_version_4(tmp: Path) -> Path:
    return patch(make_disk(tmp, "qcow2", pattern=False), 4, struct.pack(">I", 4))


def qcow2_truncated(tmp: Path) -> Path:
    path = make_disk(tmp, "qcow2")
    with open(path, "r+b") as handle:
        handle.truncate(100_000)
    return path


def qcow2_damaged(tmp: Path) -> Path:
    """Passes the header checks; qemu-img refuses it."""
    return patch(make_disk(tmp, "qcow2"), 40, struct.pack(">Q", 3 * 65536 + 8))


def qcow2_too_big(tmp: Path) -> Path:
    return make_disk(tmp, "qcow2", "30G", pattern=False)


def vhd_rounded_past_target(tmp: Path) -> Path:
    """qemu rounds a 20G vpc disk up to its CHS geometry: a little more than 20 GiB."""
    return make_disk(tmp, "vpc", "20G", pattern=False)


def vmdk_descriptor_file(tmp: Path) -> Path:
    return make_disk(tmp, "vmdk", options="subformat=monolithicFlat", pattern=False)


def vmdk_extent_elsewhere(tmp: Path) -> Path:
    path = make_disk(tmp, "vmdk", options="subformat=monolithicSparse", pattern=False)
    data = bytearray(path.read_bytes())
    start = data.index(b'SPARSE "') + len(b'SPARSE "')
    end = data.index(b'"', start)
    data[start:end] = b"/etc/passwd"
    path.write_bytes(bytes(data))
    return path


def vmdk_two_extents(tmp: Path) -> Path:
    path = make_disk(tmp, "vmdk", options="subformat=monolithicSparse", pattern=False)
    data = bytearray(path.read_bytes())
    line_start = data.index(b"RW ")
    line_end = data.index(b"\n", line_start) + 1
    data[line_end:line_end] = data[line_start:line_end]
    path.write_bytes(bytes(data[: path.stat().st_size]))
    return path


def vhd_differencing(tmp: Path) -> Path:
    path = make_disk(tmp, "vpc", options="subformat=fixed", pattern=False)
    return patch(path, path.stat().st_size - 512 + 60, struct.pack(">I", 4))


def qed(tmp: Path) -> Path:
    return make_disk(tmp, "qed", pattern=False)


def luks(tmp: Path) -> Path:
    path = tmp / "secret.luks"
    for iter_time in (10, 100, 1000):  # too short a time can fail: "Unable to get accurate CPU usage"
        done = subprocess.run(
            [
                *("qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw"),
                *("-o", f"key-secret=s0,iter-time={iter_time}", str(path), "16M"),
            ],
            capture_output=True,
        )
        if done.returncode == 0:
            return path
    # qemu-img's PBKDF benchmark sometimes cannot measure CPU time on a loaded machine: write the
    # LUKS1 header fields that identify the format ourselves (what detection reads).
    header = struct.pack(">6sH32s32s32sII", b"LUKS\xba\xbe", 1, b"aes", b"xts-plain64", b"sha256", 4096, 64)
    path.write_bytes(header.ljust(2 << 20, b"\x00"))
    return path


def polyglot_iso_qcow2(tmp: Path) -> Path:
    iso = make_iso(tmp)
    header = make_disk(tmp, "qcow2", pattern=False).read_bytes()[:512]
    return patch(iso, 0, header)


def gzipped(tmp: Path) -> Path:
    path = tmp / "disk.raw.gz"
    path.write_bytes(gzip.compress(bytes(1 << 20)))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 4 if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def ova_absolute(tmp: Path) -> Path:
    return make_ova(tmp, make_disk(tmp, "vmdk"), extra=[_member("/etc/cron.d/x")])


def ova_dotdot(tmp: Path) -> Path:
    return make_ova(tmp, make_disk(tmp, "vmdk"), extra=[_member("../../x")])


def ova_symlink(tmp: Path) -> Path:
    return make_ova(tmp, make_disk(tmp, "vmdk"), extra=[_member("disk2.vmdk", tarfile.SYMTYPE, linkname="/etc/passwd")])


def ova_hardlink(tmp: Path) -> Path:
    return make_ova(tmp, make_disk(tmp, "vmdk"), extra=[_member("disk2.vmdk", tarfile.LNKTYPE, linkname="x.ovf")])


def ova_device(tmp: Path) -> Path:
    return make_ova(tmp, make_disk(tmp, "vmdk"), extra=[_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)])


def ova_two_disks(tmp: Path) -> Path:
    first = make_disk(tmp, "vmdk")
    second = tmp / "second.vmdk"
    second.write_bytes(first.read_bytes())
    path = make_ova(tmp, first, ovf=ovf_text([first.name, second.name]))
    with tarfile.open(path, "a", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(second, arcname=second.name)
    return path


def ova_xxe(tmp: Path) -> Path:
    disk = make_disk(tmp, "vmdk")
    ovf = ovf_text([disk.name]).replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    )
    return make_ova(tmp, disk, ovf=ovf.replace("<Info>disks</Info>", "<Info>&x;</Info>"))


def ova_qcow2_with_backing(tmp: Path) -> Path:
    over = qcow2_backing(tmp)
    return make_ova(tmp, over)


def tar_without_ovf(tmp: Path) -> Path:
    path = tmp / "plain.tar"
    disk = make_disk(tmp, "vmdk")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(disk, arcname=disk.name)
    return path


CASES: list[tuple[Callable[[Path], Path], str]] = [
    (qcow2_backing, "qcow2 backing file refused"),
    (qcow2_data_file, "qcow2 external data file refused"),
    (qcow2_unknown_feature, "qcow2 with unknown incompatible features (0x400) refused"),
    (qcow2_version_4, "qcow2 version 4 is refused (only versions 2 and 3)"),
    (qcow2_truncated, "file is shorter than its header claims (truncated?)"),
    (
        qcow2_damaged,
        "qcow2 image is damaged or not what its header says "
        "(qemu-img info failed: qemu-img: Could not open 'source': Active L1 table offset invalid)",
    ),
    (qcow2_too_big, "virtual size 30 GB exceeds target size 20 GB"),
    (
        vhd_rounded_past_target,
        "virtual size 21475270656 bytes exceeds target size 21474836480 bytes (20 GB); choose a larger target size",
    ),
    (vmdk_descriptor_file, "vmdk descriptor files (extents in other files) are refused; import a single-file vmdk"),
    (vmdk_extent_elsewhere, "vmdk extent in another file refused"),
    (vmdk_two_extents, "vmdk with several extents refused"),
    (vhd_differencing, "vhd differencing disk refused"),
    (qed, "QED images are refused"),
    (luks, "LUKS-encrypted images are refused"),
    (polyglot_iso_qcow2, "file matches several formats (qcow2, iso); refused"),
    (gzipped, "unsupported format: a gzip-compressed file; decompress it before importing"),
    (ova_absolute, "OVA member '/etc/cron.d/x' has an unsafe path; refused"),
    (ova_dotdot, "OVA member '../../x' has an unsafe path; refused"),
    (ova_symlink, "OVA member 'disk2.vmdk' is a symbolic link; refused"),
    (ova_hardlink, "OVA member 'disk2.vmdk' is a hard link; refused"),
    (ova_device, "OVA member 'dev' is a device; refused"),
    (ova_two_disks, "OVA has 2 disks and the OVF does not make the boot disk clear; refused"),
    (ova_xxe, "OVF descriptor uses a DTD or entities; refused"),
    (ova_qcow2_with_backing, "qcow2 backing file refused"),
    (tar_without_ovf, "tar archive without an .ovf descriptor: not an OVA; refused"),
]


@pytest.mark.parametrize(("build", "reason"), CASES, ids=[c[0].__name__ for c in CASES])
def test_refused_with_reason_and_nothing_left(
    catalog: Catalog, people: People, tmp_path: Path, build: Callable[[Path], Path], reason: str
) -> None:
    source = build(tmp_path)
    image = import_and_wait(catalog, people.owner, file=str(source))
    assert image.status == Status.IMPORT_FAILED
    assert image.error == reason
    assert image.disk_format is None and image.sha256 is None
    assert leftovers(catalog) == []


def test_sha256_mismatch_names_both_values(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = make_disk(tmp_path, "qcow2")
    wrong = "0" * 64
    image = import_and_wait(catalog, people.owner, file=str(source), sha256=wrong)
    assert image.status == Status.IMPORT_FAILED
    assert image.error == f"SHA-256 mismatch: expected {wrong}, got {sha256_of(source)}"
    assert leftovers(catalog) == []


def test_failed_image_can_be_deleted_and_imported_again(catalog: Catalog, people: People, tmp_path: Path) -> None:
    from core.images.images import delete_images

    failed = import_and_wait(catalog, people.owner, file=str(qed(tmp_path)))
    assert failed.status == Status.IMPORT_FAILED
    assert delete_images(catalog, people.owner, [failed.id])[0].ok
    again = import_and_wait(catalog, people.owner, file=str(make_disk(tmp_path, "qcow2")))
    assert again.status == Status.AVAILABLE, again.error


def test_qemu_img_is_never_asked_to_probe(tmp_path: Path) -> None:
    """Inspection refuses before qemu-img runs: a backing file is never opened."""
    from core.importer import inspect

    over = qcow2_backing(tmp_path)
    subprocess.run(["chmod", "000", str(tmp_path / next(p.name for p in tmp_path.glob("disk-qcow2*")))], check=True)
    with pytest.raises(inspect.Refused, match="qcow2 backing file refused"):
        inspect.detect(over)


def test_internal_files_come_only_from_staging(catalog) -> None:
    """The demo's own files may be imported from staging; nothing else gets that exception."""
    import pytest as _pytest

    from core.catalog.errors import Invalid as _Invalid
    from core.importer.localfiles import check_local_file

    staged = catalog.store.staging_dir / "demo-x" / "disk.qcow2"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"\0" * 512)
    assert check_local_file(catalog.settings, staged, internal=True) == staged.resolve()
    with _pytest.raises(_Invalid, match="not in an import folder"):
        check_local_file(catalog.settings, staged)
    for outside in ("/etc/hostname", catalog.secret_path, catalog.settings.data_dir / "catalog.db"):
        with _pytest.raises(_Invalid, match="not in an import folder"):
            check_local_file(catalog.settings, outside, internal=True)


def test_a_failed_job_and_its_import_failed_image_are_committed_together(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    """No reader ever sees a failed import job beside an image still `importing` (issue: `--wait` exited 0)."""
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from core.catalog import db

    seen: list[tuple[str, str]] = []

    def after_commit(session: Session) -> None:
        with db.read_session(catalog.engine) as reader:  # a new transaction sees only committed rows
            rows = reader.execute(text("SELECT job.state, image.status FROM job JOIN image ON image.id = job.image_id"))
            seen.extend((row[0], row[1]) for row in rows)

    event.listen(Session, "after_commit", after_commit)
    try:
        image = import_and_wait(catalog, people.owner, file=str(qed(tmp_path)))
    finally:
        event.remove(Session, "after_commit", after_commit)
    assert image.status == Status.IMPORT_FAILED
    assert ("failed", "import_failed") in seen
    assert ("failed", "importing") not in seen
    assert leftovers(catalog) == []
