"""What the upload tests share: a disk file to upload (made with qemu-img), an upload link made
through the CLI as a user would, waiting on the bytes received, and the import's end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.catalog import db
from core.catalog.models import Image, Job, Status
from core.importer.diskprobe import mbr
from core.links import uploads
from tests.gateway.conftest import Gateway, sha256_file

OS_ARGS = ("--os-type", "Linux", "--arch", "x86_64", "--platform", "CentOS", "--os-version", "7.9")


def make_disk(path: Path, data_mib: int = 24) -> Path:
    """A qcow2 disk with an MBR whose clusters hold `data_mib` MiB of random data (it does not
    compress: the upload moves every byte), 1 GiB virtual."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as handle:
        handle.truncate(1 << 30)
        handle.write(mbr(1 << 30))
        for index in range(1, data_mib + 1):
            handle.seek(index * (32 << 20))  # spread over the disk: not one run
            handle.write(os.urandom(1 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return path


@dataclass
class Upload:
    gw: Gateway
    view: dict[str, Any]  # the image, with `job_id` and `upload`

    @property
    def image_id(self) -> str:
        return str(self.view["id"])

    @property
    def link(self) -> dict[str, Any]:
        return dict(self.view["upload"])

    @property
    def token(self) -> str:
        return str(self.link["ftp"]).split("//", 1)[1].split("@", 1)[0]

    @property
    def size(self) -> int:
        return int(self.link["size"])

    def staged(self) -> Path:
        return self.gw.catalog.store.import_staging(self.image_id) / uploads.SOURCE_NAME

    def received(self) -> int:
        """Bytes on disk so far (the upload's offset)."""
        try:
            return self.staged().stat().st_size
        except FileNotFoundError:
            return 0

    def wait_received(self, at_least: int, timeout: float = 60) -> int:
        """Until at least `at_least` bytes are on disk (the client is mid-upload)."""
        deadline = time.monotonic() + timeout
        while (done := self.received()) < at_least:
            assert time.monotonic() < deadline, f"only {done} of {at_least} bytes arrived"
            time.sleep(0.02)
        return done

    def image(self) -> Image:
        with db.read_session(self.gw.catalog.engine) as session:
            image = session.get(Image, self.image_id)
            assert image is not None
            return image

    def job(self) -> Job:
        with db.read_session(self.gw.catalog.engine) as session:
            job = session.get(Job, self.view["job_id"])
            assert job is not None
            return job

    def wait_ended(self, timeout: float = 120) -> Image:
        """Until the import has ended (available or import_failed); the image."""
        deadline = time.monotonic() + timeout
        while (image := self.image()).status == Status.IMPORTING:
            assert time.monotonic() < deadline, f"{self.image_id} still importing: {self.job()}"
            time.sleep(0.1)
        return image

    def assert_imported(self, source: Path) -> Image:
        """The upload became an available image whose source checksum is the file's."""
        image = self.wait_ended()
        assert image.status == Status.AVAILABLE, (image.status, image.error)
        assert image.sha256 == sha256_file(source)
        # the worker records the image, then removes its staging folder
        deadline = time.monotonic() + 30
        while self.gw.catalog.store.import_staging(self.image_id).exists():
            assert time.monotonic() < deadline, "the import left its staging folder"
            time.sleep(0.05)
        return image


def create_upload(
    gw: Gateway,
    source: Path,
    *,
    account: str = "acme-owner",
    sha256: str | None = None,
    ttl: int | None = None,
    size: int | None = None,
) -> Upload:
    """`image import --upload --bytes N --json` for `source`, as its user runs it."""
    args = ["image", "import", "--upload", "--bytes", str(size or source.stat().st_size), "--name", "up"]
    args += [*OS_ARGS, "--size-gb", "20", "--json"]
    if sha256:
        args += ["--sha256", sha256]
    if ttl:
        args += ["--ttl", str(ttl)]
    done = gw.cli(*args, account=account)
    assert done.returncode == 0, done.stderr
    return Upload(gw, json.loads(done.stdout))
