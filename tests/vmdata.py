"""Test data for the VM tests: available images backed by a small real raw file, qemu-io patterns."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.disk import qemu
from core.images.images import new_image
from core.rules.access import Actor

MIB = 1024**2
BASE_SIZE = 32 * MIB
BASE_PATTERN = 0x5A  # written at offset 0 of every base image made here
needs_qemu_system = shutil.which("qemu-system-x86_64") is not None


def make_base_image(
    catalog: Catalog,
    actor: Actor,
    *,
    status: str = Status.AVAILABLE,
    os_type: str = "Linux",
    name: str = "base",
    tenant_id: int | None = None,
) -> str:
    """An image whose store file is a 32 MiB raw disk with 64 KiB of 0x5a at offset 0."""
    windows = os_type == "Windows"
    with db.write_session(catalog.engine) as session:
        image = new_image(
            session,
            actor,
            tenant_id if tenant_id is not None else actor.tenant_id,  # type: ignore[arg-type]
            name=name,
            description="",
            os_type=os_type,
            platform="Windows" if windows else "CentOS",
            os_version="2016" if windows else "7.9",
            arch="x86_64",
            status=status,
            target_size_gb=20,
            disk_format="raw",
            virtual_size=BASE_SIZE,
        )
        image_id = image.id
    path = catalog.store.image_path(image_id, "raw")
    qemu.create(path, "raw", BASE_SIZE)
    qemu_io(path, "raw", f"write -P {BASE_PATTERN:#x} 0 64k")
    return image_id


SERIAL_GREETING = b"imagehub serial says hello\r\n"


def serial_greeting_sector() -> bytes:
    """A boot sector (real-mode x86) that writes SERIAL_GREETING to COM1 (port 0x3f8), then halts:
    the smallest guest whose console shows something."""
    code = bytes.fromhex(
        "fa"  # cli
        "31c0 8ed8"  # xor ax,ax; mov ds,ax
        "be167c"  # mov si,0x7c16 (the text, right after this code)
        "baf803"  # mov dx,0x3f8
        "ac 84c0 7403 ee ebf8"  # next: lodsb; test al,al; jz done; out dx,al; jmp next
        "f4 ebfd"  # done: hlt; jmp done
    )
    assert len(code) == 0x16
    body = code + SERIAL_GREETING + b"\0"
    return body + bytes(510 - len(body)) + b"\x55\xaa"


def make_greeting_image(catalog: Catalog, actor: Actor, name: str = "hello") -> str:
    """An available image whose disk boots `serial_greeting_sector`."""
    image_id = make_base_image(catalog, actor, name=name)
    with catalog.store.image_path(image_id, "raw").open("r+b") as disk:
        disk.write(serial_greeting_sector())
    return image_id


def qemu_io(path: Path, fmt: str, command: str) -> str:
    done = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def qemu_pids(data_dir: Path) -> set[int]:
    """PIDs of running qemu-system processes started for the VMs of the catalog in `data_dir` (only
    those: tests on other workers run VMs of their own at the same time)."""
    found = set()
    mine = str(data_dir.resolve()).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if b"process=imagehub-vm-" in cmdline and mine in cmdline:
                    found.add(int(proc.name))
            except OSError:
                pass
    return found
