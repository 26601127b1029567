"""tus 1.0 uploads (`/tus/TOKEN`) with tuspy: created and cut partway, resumed by a new uploader on the
same URL, chunks checked (sha1, sha256); the protocol's refusals (412, 415, 409, 413, 460) and tokens."""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tusclient import client

from core.links.links import REFUSAL_MESSAGE
from tests.gateway.conftest import Gateway
from tests.gateway.test_upload_http import assert_imported, send, set_expired, wait_no_writer, wait_writer
from tests.gateway.uploadkit import create_upload, make_disk

MIB = 1 << 20
TUS = {"Tus_Resumable": "1.0.0"}
STREAM = {**TUS, "Content_Type": "application/offset+octet-stream"}

# A tuspy client that creates the upload (POST to the tus URL, as a client given an endpoint does)
# and sends it in small checked (sha256) chunks at a slow pace, until it is killed.
SLOW_CLIENT = """
import hashlib, sys, time
from tusclient import client
from tusclient.uploader import Uploader

class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)

tus = client.TusClient(sys.argv[1])
uploader = Sha256Uploader(file_path=sys.argv[2], client=tus, chunk_size=256 * 1024, upload_checksum=True)
uploader.set_url(uploader.create_url())
assert uploader.url == sys.argv[1], uploader.url
while uploader.offset < uploader.stop_at:
    uploader.upload_chunk()
    time.sleep(0.05)
"""


def sha(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("disk") / "disk.qcow2", data_mib=16)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("small") / "small.qcow2", data_mib=2)


@pytest.fixture
def slow_client() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_tuspy_creates_is_cut_and_a_new_uploader_resumes(
    gw: Gateway, disk: Path, slow_client: list[subprocess.Popen[bytes]]
) -> None:
    upload = create_upload(gw, disk)
    tus_url = upload.link["tus"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLIENT, tus_url, str(disk)], stderr=subprocess.DEVNULL)
    slow_client.append(proc)
    upload.wait_received(3 * MIB)
    proc.kill()
    proc.wait()
    wait_no_writer(upload)
    offset = upload.received()
    assert 3 * MIB <= offset < upload.size

    uploader = client.TusClient(tus_url).uploader(file_path=str(disk), url=tus_url, chunk_size=4 * MIB)
    assert uploader.offset == offset  # tuspy asked HEAD
    uploader.upload_checksum = True  # sha1, the algorithm tus requires
    uploader.upload()
    assert uploader.offset == upload.size
    assert_imported(upload, disk)


def test_options_head_and_creation(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    path, size = urlsplit(upload.link["tus"]).path, upload.size
    status, headers, _ = send(gw, "OPTIONS", path)
    assert status == 204
    assert headers["tus-resumable"] == headers["tus-version"] == "1.0.0"
    assert set(headers["tus-extension"].split(",")) == {"creation", "checksum", "expiration"}
    assert headers["tus-max-size"] == str(size)
    assert set(headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256"}
    status, headers, _ = send(gw, "HEAD", path, **TUS)
    assert status == 200 and headers["upload-offset"] == "0" and headers["upload-length"] == str(size)
    assert headers["cache-control"] == "no-store" and headers["tus-resumable"] == "1.0.0"
    assert headers["upload-expires"].endswith(" GMT")
    # creation: an upload of exactly --bytes is this URL; another length, or a deferred one, is not
    status, headers, _ = send(gw, "POST", path, Upload_Length=str(size), **TUS)
    assert status == 201 and headers["location"] == path
    assert send(gw, "POST", path, Upload_Length=str(size + 1), **TUS)[0] == 413
    assert send(gw, "POST", path, Upload_Length=str(size - 1), **TUS)[0] == 400
    assert send(gw, "POST", path, Upload_Length="-1", **TUS)[0] == 400
    assert send(gw, "POST", path, Upload_Defer_Length="1", **TUS)[0] == 400
    # the version is checked on every request but OPTIONS
    for method in ("HEAD", "POST", "PATCH"):
        status, headers, _ = send(gw, method, path, Tus_Resumable="0.2.2", Upload_Length=str(size))
        assert status == 412 and headers["tus-version"] == "1.0.0"
    status, headers, _ = send(gw, "DELETE", path, **TUS)
    assert status == 405 and "PATCH" in headers["allow"]
    assert send(gw, "GET", path)[0] == 405


def test_patch_refusals_leave_the_offset_alone(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    path, size, data = urlsplit(upload.link["tus"]).path, upload.size, small.read_bytes()
    status, headers, _ = send(gw, "PATCH", path, data[:1000], Upload_Offset="0", **STREAM)
    assert status == 204 and headers["upload-offset"] == "1000" and headers["tus-resumable"] == "1.0.0"
    chunk = data[1000:300_000]
    # a wrong offset, a wrong content type, hostile offsets
    for offset in ("0", "999", "1001", str(size), "99999999999999999"):
        status, headers, _ = send(gw, "PATCH", path, chunk, Upload_Offset=offset, **STREAM)
        assert (status, headers["upload-offset"]) == (409, "1000")
    for offset in ("-1", "abc", "1e3", "1" * 40, "", "²"):
        assert send(gw, "PATCH", path, chunk, Upload_Offset=offset, **STREAM)[0] == 400
    assert send(gw, "PATCH", path, chunk, **STREAM)[0] == 400
    status, _, _ = send(gw, "PATCH", path, chunk, Upload_Offset="1000", Content_Type="application/octet-stream", **TUS)
    assert status == 415
    # more than the upload's bytes: refused before the body is read
    status, headers, _ = send(gw, "PATCH", path, data[1000:] + b"x", Upload_Offset="1000", **STREAM)
    assert status == 413
    # checksums: a mismatch drops the whole chunk (460); an unknown algorithm or bad base64 is 400
    status, headers, body = send(
        gw, "PATCH", path, chunk, Upload_Offset="1000", Upload_Checksum=sha("sha256", chunk + b"x"), **STREAM
    )
    assert (status, headers["upload-offset"]) == (460, "1000") and b"chunk dropped" in body
    assert upload.received() == 1000
    assert send(gw, "HEAD", path, **TUS)[1]["upload-offset"] == "1000"
    assert send(gw, "PATCH", path, chunk, Upload_Offset="1000", Upload_Checksum="md5 AAAA", **STREAM)[0] == 400
    assert send(gw, "PATCH", path, chunk, Upload_Offset="1000", Upload_Checksum="sha1 !!", **STREAM)[0] == 400
    # the last chunk too: a mismatch may not complete the upload
    status, headers, _ = send(
        gw, "PATCH", path, data[1000:], Upload_Offset="1000", Upload_Checksum=sha("sha1", data[1001:]), **STREAM
    )
    assert (status, headers["upload-offset"]) == (460, "1000")
    assert upload.job().state == "waiting"
    status, headers, _ = send(
        gw, "PATCH", path, data[1000:], Upload_Offset="1000", Upload_Checksum=sha("sha256", data[1000:]), **STREAM
    )
    assert (status, headers["upload-offset"]) == (204, str(size))
    assert_imported(upload, small)


def test_tokens_of_the_wrong_kind_revoked_or_expired_get_the_one_refusal(gw: Gateway, small: Path) -> None:
    download = gw.link(gw.image(size=1000))
    refusal = (REFUSAL_MESSAGE + "\n").encode()
    expired = create_upload(gw, small)
    set_expired(gw, expired.link["id"])
    revoked = create_upload(gw, small)
    assert gw.cli("link", "revoke", revoked.link["id"]).returncode == 0
    paths = [f"/tus/{download.token}", urlsplit(expired.link["tus"]).path, urlsplit(revoked.link["tus"]).path]
    paths += [urlsplit(revoked.link["tus"]).path + "x", "/tus/", "/tus/lnk-x.y"]
    for path in paths:
        for method in ("OPTIONS", "HEAD", "POST", "PATCH"):
            body = b"x" if method == "PATCH" else None
            status, headers, answer = send(gw, method, path, body, Upload_Offset="0", Upload_Length="1", **STREAM)
            assert status == 403 and "upload-offset" not in headers, (path, method)
            assert answer == (b"" if method == "HEAD" else refusal)
    assert expired.received() == revoked.received() == 0


def test_a_second_writer_gets_423(gw: Gateway, disk: Path) -> None:
    upload = create_upload(gw, disk)
    path = urlsplit(upload.link["tus"]).path
    # the first writer: a PATCH whose body comes slowly (a raw socket, half sent)
    data = disk.read_bytes()
    with socket.create_connection((gw.host, gw.http), timeout=30) as first:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {upload.size}\r\n\r\n"
        )
        first.sendall(head.encode() + data[:1000])
        wait_writer(upload)
        status, _, body = send(gw, "PATCH", path, data[:1000], Upload_Offset="0", **STREAM)
        assert status == 423 and b"another connection is writing this upload" in body
    wait_no_writer(upload)
    assert upload.received() == 1000  # what the first writer sent before it went away is kept
    uploader = client.TusClient(upload.link["tus"]).uploader(file_path=str(disk), url=upload.link["tus"])
    assert uploader.offset == 1000
    uploader.upload()
    assert_imported(upload, disk)
