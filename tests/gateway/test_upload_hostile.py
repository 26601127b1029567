"""A hostile file that arrives through an upload link is refused exactly as one given by URL: a qcow2
whose backing file names a path on the server (CVE-2015-5162's kind) ends `import_failed`, with
nothing left in staging or the store."""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.catalog.models import Status
from tests.gateway.conftest import Gateway
from tests.gateway.uploadkit import create_upload


def test_a_qcow2_with_a_backing_file_uploaded_with_curl_ends_import_failed(gw: Gateway, tmp_path: Path) -> None:
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", str(child), "64M"], check=True
    )
    upload = create_upload(gw, child)
    done = subprocess.run(["curl", "-sS", "--fail", "-T", str(child), upload.link["http"]], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = upload.wait_ended()
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None and "backing file" in image.error
    assert not gw.catalog.store.import_staging(upload.image_id).exists()
    assert not list(gw.catalog.store.images_dir.glob(f"{upload.image_id}.*"))
