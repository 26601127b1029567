"""HTTP uploads with curl (`PUT /u/TOKEN/`): cut partway and resumed with `curl -C OFFSET -T`, the offset
from `curl -sI`; every refusal (wrong offset, bytes past --bytes, a wrong TOTAL, tokens of the wrong kind,
revoked and expired links, a second writer, hostile lengths, GET). tus: tests/gateway/test_upload_tus.py.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update
from sqlmodel import col

from core.catalog import db
from core.catalog.clock import utcnow
from core.catalog.models import Link as LinkRow
from core.catalog.models import Status
from core.links.links import REFUSAL_MESSAGE
from tests.gateway.conftest import Gateway
from tests.gateway.uploadkit import Upload, create_upload, make_disk

MIB = 1 << 20


def send(gw: Gateway, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request (header names with `_` for `-`); status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection(gw.host, gw.http, timeout=30)
    try:
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def raw_request(gw: Gateway, head: str) -> bytes:
    """Send a request head as written (hostile headers http.client would not send), no body; the
    answer's first bytes. With `Expect: 100-continue` a refusal comes back although no body was sent."""
    with socket.create_connection((gw.host, gw.http), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        return sock.recv(65536)


def path_of(url: str) -> str:
    return urlsplit(url).path


def writer_holds(upload: Upload) -> bool:
    """Whether a connection holds the upload: its writer's flock, read from /proc/locks (taking the
    lock here, even for a moment, would turn a writer away)."""
    try:
        inode = upload.staged().stat().st_ino
    except FileNotFoundError:
        return False
    with open("/proc/locks") as handle:
        return any(
            len(fields := line.split()) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}")
            for line in handle
        )


def wait_no_writer(upload: Upload, timeout: float = 30) -> None:
    """Until no connection holds the upload (what its writer received is on disk)."""
    deadline = time.monotonic() + timeout
    while writer_holds(upload):
        assert time.monotonic() < deadline, "the upload is still held"
        time.sleep(0.02)


def wait_writer(upload: Upload, timeout: float = 30) -> None:
    """Until a connection holds the upload (a writer has taken it)."""
    deadline = time.monotonic() + timeout
    while not writer_holds(upload):
        assert time.monotonic() < deadline, "no writer took the upload"
        time.sleep(0.02)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=120)


def head_offset(url: str) -> int:
    done = curl("-I", url)
    assert done.returncode == 0, done.stderr
    match = re.search(r"^upload-offset: (\d+)\r?$", done.stdout, re.MULTILINE | re.IGNORECASE)
    assert match, done.stdout
    return int(match.group(1))


def assert_imported(upload: Upload, source: Path, timeout: float = 60) -> None:
    """Upload.assert_imported, once the worker has also removed the staging folder: it does so just
    after it records the image available, so looking at once can see it still there."""
    upload.wait_ended()
    deadline = time.monotonic() + timeout
    while upload.gw.catalog.store.import_staging(upload.image_id).exists():
        assert time.monotonic() < deadline, "the staging folder stays"
        time.sleep(0.05)
    upload.assert_imported(source)


def bytes_received_metric(gw: Gateway) -> float:
    """`imagehub_bytes_received{protocol="http"}` from the gateway's metrics listener."""
    port = re.search(r"metrics=127\.0\.0\.1:(\d+)", gw.log_text())
    assert port
    conn = http.client.HTTPConnection("127.0.0.1", int(port.group(1)), timeout=30)
    try:
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = re.search(r'^imagehub_bytes_received_total\{protocol="http"\} (\S+)$', metrics, re.MULTILINE)
    assert found, metrics
    return float(found.group(1))


def set_expired(gw: Gateway, link_id: str) -> None:
    with db.write_session(gw.catalog.engine) as session:
        past = utcnow() - timedelta(seconds=1)
        session.exec(update(LinkRow).where(col(LinkRow.id) == link_id).values(expires_at=past))


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("disk") / "disk.qcow2")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("small") / "small.qcow2", data_mib=2)


@pytest.fixture
def started_curl() -> Iterator[list[subprocess.Popen[bytes]]]:
    """curl processes a test starts: killed at its end if still running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def slow_curl(started: list[subprocess.Popen[bytes]], rate: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["curl", "-sS", "--limit-rate", rate, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started.append(proc)
    return proc


def test_curl_upload_cut_then_resumed_with_the_offset_head_gives(
    gw: Gateway, disk: Path, started_curl: list[subprocess.Popen[bytes]]
) -> None:
    upload = create_upload(gw, disk)
    url = upload.link["http"]
    assert url.endswith("/") and "/u/" in url
    proc = slow_curl(started_curl, "4M", "-T", str(disk), url)  # curl appends the file's name
    upload.wait_received(4 * MIB)
    proc.kill()
    proc.wait()
    wait_no_writer(upload)

    offset = head_offset(url)
    assert 4 * MIB <= offset < upload.size
    assert offset == upload.received()
    assert upload.job().phase == "uploading"
    done = curl("-C", str(offset), "-T", str(disk), url)
    assert done.returncode == 0, done.stderr
    assert f"upload complete: {upload.size} bytes" in done.stdout
    # its token still names the upload: more bytes are told it is complete, not that the link is unknown
    status, _, body = send(
        gw, "PUT", path_of(url), b"x", Content_Range=f"bytes {upload.size}-{upload.size}/{upload.size}"
    )
    assert status == 409 and b"this upload is complete" in body
    # and a client that lost the last reply learns from HEAD that every byte is in (tus clients resume so)
    for path in (path_of(url), path_of(upload.link["tus"])):
        status, headers, _ = send(gw, "HEAD", path, Tus_Resumable="1.0.0")
        assert status == 200 and headers["upload-offset"] == headers["upload-length"] == str(upload.size)
    assert_imported(upload, disk)
    log = gw.log_text()
    assert re.search(rf"link={upload.link['id']} proto=http client=\S+ file=disk.qcow2 bytes=\d+ status=aborted", log)
    assert f"link={upload.link['id']} proto=http" in log and f"bytes={upload.size - offset} status=201" in log
    # the gateway's tick adds the bytes of ended transfers to the counter about once a second
    deadline = time.monotonic() + 30
    while (received := bytes_received_metric(gw)) < upload.size:
        assert time.monotonic() < deadline, received
        time.sleep(0.1)


def test_head_options_and_get_tell_the_offset_and_how_to_go_on(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    path = path_of(upload.link["http"])
    for method in ("HEAD", "OPTIONS"):
        status, headers, _ = send(gw, method, path + "small.qcow2")
        assert status == 200
        assert headers["upload-offset"] == "0" and headers["upload-length"] == str(upload.size)
        assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    status, headers, _ = send(gw, "PUT", path, small.read_bytes()[:1000], Content_Range=f"bytes 0-999/{upload.size}")
    assert status == 200 and headers["upload-offset"] == "1000"
    status, headers, body = send(gw, "GET", path + "small.qcow2")
    assert status == 405 and "PUT" in headers["allow"] and headers["upload-offset"] == "1000"
    text = body.decode()
    assert "not a download" in text and f"received 1000 of {upload.size} bytes" in text
    assert f"curl -C 1000 -T FILE {upload.link['http']}" in text
    # the path without the trailing slash is the upload too; other methods are not allowed
    assert send(gw, "HEAD", path.rstrip("/"))[1]["upload-offset"] == "1000"
    status, headers, _ = send(gw, "DELETE", path)
    assert status == 405 and "PUT" in headers["allow"]
    assert upload.received() == 1000


def test_wrong_offsets_are_409_with_the_offset_and_the_command(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    path, data, size = path_of(upload.link["http"]), small.read_bytes(), upload.size
    status, headers, body = send(gw, "PUT", path + "x", data[100:], Content_Range=f"bytes 100-{size - 1}/{size}")
    assert status == 409 and headers["upload-offset"] == "0"
    assert body.decode() == (
        f"this upload has 0 bytes; send the rest from there: curl -C 0 -T FILE {upload.link['http']}\n"
    )
    assert send(gw, "PUT", path, data[:5000], Content_Range=f"bytes 0-4999/{size}")[0] == 200
    # a whole-file PUT once bytes have arrived, an offset behind or ahead of the upload's
    status, headers, body = send(gw, "PUT", path, data)
    assert status == 409 and headers["upload-offset"] == "5000"
    assert b"whole-file PUT" in body and b"curl -C 5000 -T FILE" in body
    for first in (0, 4999, 5001):
        status, headers, _ = send(gw, "PUT", path, data[first:], Content_Range=f"bytes {first}-{size - 1}/{size}")
        assert (status, headers["upload-offset"]) == (409, "5000")
    assert upload.received() == 5000
    status, _, body = send(gw, "PUT", path, data[5000:], Content_Range=f"bytes 5000-{size - 1}/{size}")
    assert status == 201 and body.decode() == f"upload complete: {size} bytes; the import starts now\n"
    assert_imported(upload, small)


def test_bytes_past_the_upload_and_wrong_totals_are_refused(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    path, size = path_of(upload.link["http"]), upload.size
    data = small.read_bytes() + b"x"
    # the TOTAL of Content-Range must be --bytes (another file), and the range must be inside it
    status, _, body = send(gw, "PUT", path, data, Content_Range=f"bytes 0-{size}/{size + 1}")
    assert status == 400 and f"exactly {size} bytes (--bytes), not {size + 1}".encode() in body
    status, _, _ = send(gw, "PUT", path, data, Content_Range=f"bytes 0-{size}/{size}")
    assert status == 400
    # a body longer than the upload: refused before it is read, even when it is sent
    status, headers, body = send(gw, "PUT", path, data)
    assert status == 413 and headers["upload-offset"] == "0" and b"exactly" in body
    # with Expect: 100-continue, the refusal comes before any byte of the body is sent
    answer = raw_request(
        gw,
        f"PUT {path} HTTP/1.1\nHost: x\nContent-Length: {size + 1}\nExpect: 100-continue\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    # chunked (no length given): refused once it passes; what came before the excess is a valid start
    status, _, _ = send(gw, "PUT", path, iter([data[: size - 10], data[size - 10 :]]))
    assert status == 413
    assert upload.received() == 0  # a body that passes the upload is dropped whole: it is another file
    assert upload.image().status == Status.IMPORTING


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Content-Length: -1", b"400"),
        ("Content-Length: abc", b"400"),
        ("Content-Length: 1e3", b"400"),
        ("Content-Length: 99999999999999999999999999999", b"4"),
        ("Content-Length: 9223372036854775807", b"413"),
        ("Content-Range: bytes -1-5/10", b"400"),
        ("Content-Range: bytes 0-99999999999999999999999/99999999999999999999999", b"400"),
        ("Content-Range: bytes */1000", b"400"),
        ("Content-Range: bytes ٣-5/10", b"400"),
    ],
)
def test_hostile_lengths_and_ranges_are_refused(gw: Gateway, small: Path, header: str, expected: bytes) -> None:
    upload = create_upload(gw, small)
    answer = raw_request(gw, f"PUT {path_of(upload.link['http'])} HTTP/1.1\nHost: x\n{header}\nExpect: 100-continue\n")
    assert answer.split(b" ")[1].startswith(expected), answer[:200]  # aiohttp's parser answers in HTTP/1.0
    assert b"100 Continue" not in answer
    assert upload.received() == 0


def test_tokens_of_the_wrong_kind_revoked_or_expired_get_the_one_refusal(gw: Gateway, small: Path) -> None:
    upload = create_upload(gw, small)
    download = gw.link(gw.image(size=1000))
    refusal = (REFUSAL_MESSAGE + "\n").encode()
    # an upload token downloads nothing
    assert send(gw, "GET", f"/d/{upload.token}/small.qcow2")[::2] == (403, refusal)
    assert send(gw, "GET", f"/d/{upload.token}/upload")[::2] == (403, refusal)
    # a download token uploads nothing, and tells nothing about uploads
    data = small.read_bytes()
    for method, body in (("PUT", data), ("HEAD", None), ("OPTIONS", None), ("GET", None)):
        status, headers, answer = send(gw, method, f"/u/{download.token}/x", body)
        assert status == 403 and "upload-offset" not in headers
        assert answer == (b"" if method == "HEAD" else refusal)
    assert send(gw, "PUT", f"/u/{upload.token}x/", data)[::2] == (403, refusal)
    assert send(gw, "PUT", f"/u/{upload.token}/a/b", data)[::2] == (403, refusal)
    assert send(gw, "PUT", "/u/", data)[0] == 403
    # expired, then revoked
    expired = create_upload(gw, small)
    set_expired(gw, expired.link["id"])
    assert send(gw, "PUT", path_of(expired.link["http"]), data)[::2] == (403, refusal)
    assert send(gw, "HEAD", path_of(expired.link["http"]))[0] == 403
    revoke = gw.cli("link", "revoke", upload.link["id"])
    assert revoke.returncode == 0, revoke.stderr
    assert send(gw, "PUT", path_of(upload.link["http"]), data)[::2] == (403, refusal)
    assert upload.received() == 0


def test_a_second_writer_is_refused_and_the_first_resumes(
    gw: Gateway, disk: Path, started_curl: list[subprocess.Popen[bytes]]
) -> None:
    upload = create_upload(gw, disk)
    url, size = upload.link["http"], upload.size
    first = slow_curl(started_curl, "200K", "-T", str(disk), url)
    wait_writer(upload)
    offset = upload.received()
    data = disk.read_bytes()
    status, _, body = send(gw, "PUT", path_of(url), data[offset:], Content_Range=f"bytes {offset}-{size - 1}/{size}")
    assert status == 423 and b"another connection is writing this upload" in body
    first.kill()
    first.wait()
    wait_no_writer(upload)
    offset = head_offset(url)
    done = curl("-C", str(offset), "-T", str(disk), url)
    assert done.returncode == 0 and "upload complete" in done.stdout, (done.stdout, done.stderr)
    assert_imported(upload, disk)


def test_revoking_cuts_a_running_upload(gw: Gateway, disk: Path, started_curl: list[subprocess.Popen[bytes]]) -> None:
    upload = create_upload(gw, disk)
    proc = slow_curl(started_curl, "200K", "-T", str(disk), upload.link["http"])
    wait_writer(upload)
    revoke = gw.cli("link", "revoke", upload.link["id"])
    assert revoke.returncode == 0, revoke.stderr
    assert proc.wait(timeout=30) != 0  # the gateway's tick cut it
    image = upload.wait_ended()
    assert image.status == Status.IMPORT_FAILED and image.error == "upload cancelled"
    deadline = time.monotonic() + 30
    while f"link={upload.link['id']} proto=http" not in (log := gw.log_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert re.search(rf"link={upload.link['id']} proto=http .* status=cut-revoked", log)
