"""SFTP uploads: OpenSSH's sftp `put` cut partway (killed) and resumed with `reput`, the link's ready
command, asyncssh's `put`; and every refusal: `put` over bytes already there, writes at the wrong
offset or past --bytes, changes other than writing, reading, a download token writing, revoked and
expired tokens, a second writer, and a running upload cut when its link is revoked."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from core.links import links
from tests.gateway.conftest import Gateway
from tests.gateway.test_http_metrics import get
from tests.gateway.test_refusals import assert_sftp_refused, sftp_connect
from tests.gateway.uploadkit import Upload, create_upload, make_disk

RATE_KBIT = 16_000  # `sftp -l`: about 2 MB/s, so the upload of the disk below is cut partway


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("upload") / "disk.qcow2", data_mib=12)


def sftp_cmd(gw: Gateway, upload: Upload, home: Path, *extra: str) -> list[str]:
    return [
        "sftp",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={home / 'known_hosts'}",
        "-o",
        "PreferredAuthentications=none,password",
        "-o",
        "BatchMode=yes",
        "-P",
        str(gw.sftp),
        *extra,
        f"{upload.token}@{gw.host}",
    ]


def run_batch(
    gw: Gateway, upload: Upload, tmp_path: Path, commands: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    batch = tmp_path / "batch"
    batch.write_text(commands)
    return subprocess.run(
        sftp_cmd(gw, upload, tmp_path, *extra, "-b", str(batch)),
        cwd=tmp_path,
        env=gw.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def wait_released(upload: Upload, timeout: float = 20) -> None:
    """Until no writer holds the upload (the server let go of a killed client's connection)."""
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(upload.staged(), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, "the server still holds the upload"
        finally:
            os.close(fd)
        time.sleep(0.02)


def put_and_kill(gw: Gateway, upload: Upload, tmp_path: Path, disk: Path) -> int:
    """A rate-limited `put`, killed (sftp and its ssh) once bytes reached the disk; the bytes there."""
    batch = tmp_path / "put-batch"
    batch.write_text(f"put {disk} disk.qcow2\n")
    cmd = sftp_cmd(gw, upload, tmp_path, "-l", str(RATE_KBIT), "-b", str(batch))
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=gw.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        upload.wait_received(1)
        assert proc.poll() is None, "sftp ended before it was killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(20)
    wait_released(upload)
    received = upload.received()
    assert 0 < received < disk.stat().st_size
    return received


def metrics_received(gw: Gateway) -> float:
    announced = re.search(r"metrics=127\.0\.0\.1:(\d+)", gw.log_text())
    assert announced
    _status, body = get("127.0.0.1", int(announced.group(1)), "/metrics")
    found = re.search(rb'imagehub_bytes_received_total\{protocol="sftp"\} ([\d.e+]+)', body)
    assert found
    return float(found.group(1))


def test_put_killed_midway_resumes_with_reput(gw: Gateway, disk: Path, tmp_path: Path) -> None:
    before = metrics_received(gw)
    upload = create_upload(gw, disk)
    received = put_and_kill(gw, upload, tmp_path, disk)
    # A plain put now would start over: refused, with the reason on stderr (OpenSSH shows no status text).
    again = run_batch(gw, upload, tmp_path, f"put {disk} disk.qcow2\n")
    assert again.returncode != 0
    assert f"this upload has {received} bytes already" in again.stderr and "reput" in again.stderr
    assert upload.received() == received
    done = run_batch(gw, upload, tmp_path, f"reput {disk} disk.qcow2\n")
    assert done.returncode == 0, done.stderr
    upload.assert_imported(disk)
    deadline = time.monotonic() + 10
    while metrics_received(gw) - before < disk.stat().st_size:  # counted at the registry's next tick
        assert time.monotonic() < deadline
        time.sleep(0.1)


def run_ready_command(gw: Gateway, upload: Upload, tmp_path: Path, disk: Path) -> None:
    """The link's `sftp_command` as its user runs it (only known_hosts kept out of the test's home)."""
    command = upload.link["sftp_command"].replace(links.LOCAL_FILE, str(disk))
    assert command.startswith(f"echo 'reput {disk}' | sftp -b - ")
    command = command.replace("sftp -b - ", f"sftp -b - -o UserKnownHostsFile={tmp_path / 'known_hosts'} ")
    done = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=gw.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_ready_command_reputs_from_the_start_and_after_a_kill(gw: Gateway, disk: Path, tmp_path: Path) -> None:
    fresh = create_upload(gw, disk)
    run_ready_command(gw, fresh, tmp_path, disk)
    fresh.assert_imported(disk)

    upload = create_upload(gw, disk)
    put_and_kill(gw, upload, tmp_path, disk)
    run_ready_command(gw, upload, tmp_path, disk)
    upload.assert_imported(disk)


async def test_asyncssh_put_takes_the_advertised_write_length(gw: Gateway, disk: Path) -> None:
    """asyncssh writes as long as the server's limits@openssh.com allows: they must fit its request cap.
    (`sparse=False`: by default it skips the local file's holes, and an upload takes no gaps.)"""
    upload = create_upload(gw, disk)
    async with await sftp_connect(gw, upload.token) as conn, conn.start_sftp_client() as sftp:
        assert sftp.limits.max_write_len == 256 * 1024
        assert (await sftp.stat("anything")).size == 0
        await sftp.put(str(disk), "disk.qcow2", sparse=False)
    upload.assert_imported(disk)


async def test_writes_off_the_offset_or_past_the_size_are_refused(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(os.urandom(100_000))
    upload = create_upload(gw, source, size=100_000)
    data = source.read_bytes()
    async with await sftp_connect(gw, upload.token) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("up.raw", asyncssh.FXF_WRITE | asyncssh.FXF_CREAT, encoding=None) as handle:
            await handle.write(data[:40_000], 0)
            with pytest.raises(asyncssh.SFTPFailure, match="must continue at byte 40000, not 50000"):
                await handle.write(data[50_000:60_000], 50_000)
            with pytest.raises(asyncssh.SFTPFailure, match="must continue at byte 40000, not 0"):
                await handle.write(data[:10], 0)
            with pytest.raises(asyncssh.SFTPFailure, match="takes exactly 100000 bytes"):
                await handle.write(data[40_000:] + b"x", 40_000)
            assert (await handle.stat()).size == 40_000
        assert (await sftp.stat("/other-name")).size == 40_000
        names = [entry.filename for entry in await sftp.readdir("/")]
        assert names == [".", "..", "upload"]
        with pytest.raises(asyncssh.SFTPFailure, match="use `reput` to continue at byte 40000"):
            await sftp.open("up.raw", "wb")
        async with sftp.open("up.raw", "ab") as handle:
            await handle.write(data[40_000:], 40_000)
    upload.wait_ended()


async def test_nothing_but_writing_is_allowed(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(os.urandom(1000))
    upload = create_upload(gw, source)
    async with await sftp_connect(gw, upload.token) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="cannot be read|takes writes only"):
            await sftp.open("up.raw", "rb")
        for refused in (sftp.remove("up.raw"), sftp.rename("up.raw", "b"), sftp.mkdir("d"), sftp.rmdir("d")):
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="holds one file"):
                await refused
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="holds one file"):
            await sftp.symlink("up.raw", "s")
        with pytest.raises(asyncssh.SFTPNoSuchFile, match="no directories"):
            await sftp.open("d/up.raw", "ab")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="size and owner"):
            await sftp.truncate("up.raw", 10)
        await sftp.chmod("up.raw", 0o600)  # `put -p`: times and permissions are taken and ignored
        await sftp.utime("up.raw", (1, 1))
    done = run_batch(gw, upload, tmp_path, "get up.raw copy\n")
    assert done.returncode != 0 and not (tmp_path / "copy").exists()
    assert upload.received() == 0


async def test_a_download_token_cannot_upload(gw: Gateway, tmp_path: Path) -> None:
    link = gw.link(gw.image(size=1000))
    async with await sftp_connect(gw, link.token) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="Read-only"):
            await sftp.open(link.filename, "ab")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="Read-only"):
            await sftp.open("new.raw", "wb")
        assert len(await (await sftp.open(link.filename, "rb")).read()) == 1000


async def test_revoked_and_expired_upload_tokens_are_refused(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(os.urandom(1000))
    revoked = create_upload(gw, source)
    assert gw.cli("link", "revoke", revoked.link["id"]).returncode == 0
    await assert_sftp_refused(gw, revoked.token)
    expired = create_upload(gw, source, ttl=1)
    deadline = time.monotonic() + 5
    while links.check_links(gw.catalog, [expired.link["id"]])[expired.link["id"]] != "expired":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    await assert_sftp_refused(gw, expired.token)


async def test_one_writer_at_a_time(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(os.urandom(1000))
    upload = create_upload(gw, source)
    async with (
        await sftp_connect(gw, upload.token) as first,
        first.start_sftp_client() as one,
        await sftp_connect(gw, upload.token) as second,
        second.start_sftp_client() as two,
    ):
        async with one.open("a", "ab") as handle:
            await handle.write(source.read_bytes()[:10], 0)
            with pytest.raises(asyncssh.SFTPFailure, match="another connection is writing this upload"):
                await two.open("b", "ab")
        async with two.open("b", "ab") as handle:  # the first let go when it closed its file
            await handle.write(source.read_bytes()[10:], 10)
    upload.wait_ended()


async def test_revoking_cuts_a_running_upload(gw: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(os.urandom(1000))
    upload = create_upload(gw, source)
    async with await sftp_connect(gw, upload.token) as conn, conn.start_sftp_client() as sftp:
        handle = await sftp.open("a", "ab")
        await handle.write(source.read_bytes()[:10], 0)
        assert gw.cli("link", "revoke", upload.link["id"]).returncode == 0
        await conn.wait_closed()  # the registry's tick cuts the connection
    assert upload.wait_ended().status == "import_failed"
