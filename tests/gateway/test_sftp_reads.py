"""SFTP reads: served from the page cache on the event loop, from a thread when the disk must be
waited for, and sent without an SSH_MSG_IGNORE before every packet."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh
import pytest

from gateway.sftp import ENCRYPTION_ALGS, _pread_cached
from tests.gateway.conftest import Gateway, Link
from tests.gateway.test_refusals import sftp_connect

pytestmark = pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv with RWF_NOWAIT (Linux)")


def evict(path: Path) -> None:
    """Drop `path` from the page cache (its pages are clean: written and synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=3 * 1024 * 1024 + 5))


def test_cached_read_comes_whole_and_a_short_one_is_left_to_the_thread(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _pread_cached(fd, 100_000, 5) == data[5:100_005]
        # Reaching the end of the file (or past it) is short: the thread's plain pread answers.
        assert _pread_cached(fd, 100_000, 250_000) is None
        assert _pread_cached(fd, 10, len(data)) is None
    finally:
        os.close(fd)


def test_read_of_pages_not_cached_is_left_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1024 * 1024))
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _pread_cached(fd, 256 * 1024, 0) is None
    finally:
        os.close(fd)


async def test_download_is_whole_whether_the_file_is_cached_or_not(gw: Gateway, link: Link) -> None:
    expected = link.path.read_bytes()
    for cached in (True, False):
        if not cached:
            evict(link.path)
        async with (
            await sftp_connect(gw, link.token) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(link.filename, "rb") as handle,
        ):
            assert await handle.read() == expected, f"cached={cached}"


async def test_no_ignore_packet_precedes_each_data_packet(
    gw: Gateway, link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncssh's default (an empty SSH_MSG_IGNORE before every packet) doubles the packets."""
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            async with (
                await sftp_connect(gw, link.token) as conn,
                conn.start_sftp_client() as sftp,
                sftp.open(link.filename, "rb") as handle,
            ):
                assert len(await handle.read(64 * 1024)) == 64 * 1024
    finally:
        asyncssh.set_debug_level(1)
    received = [m for m in (r.getMessage() for r in caplog.records) if "Received MSG_" in m]
    assert [m for m in received if "Received MSG_CHANNEL_DATA" in m]
    assert not [m for m in received if "Received MSG_IGNORE" in m]


async def test_cbc_is_never_negotiated(gw: Gateway, link: Link) -> None:
    """Skipping the ignore packets is safe only because no CBC cipher can be negotiated."""
    assert not [alg for alg in ENCRYPTION_ALGS if "cbc" in alg]
    async with await sftp_connect(gw, link.token, encryption_algs=["aes128-cbc", "aes128-ctr"]) as conn:
        assert conn.get_extra_info("send_cipher") == conn.get_extra_info("recv_cipher") == "aes128-ctr"


async def test_asyncssh_get_asks_where_the_data_is_and_downloads_whole(gw: Gateway, link: Link, tmp_path: Path) -> None:
    """asyncssh's `SFTPClient.get` asks for the file's data ranges (ranges@asyncssh.com) before reading."""
    async with await sftp_connect(gw, link.token) as conn, conn.start_sftp_client() as sftp:
        await sftp.get(link.filename, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == link.path.read_bytes()
