"""HTTP abuse, with raw sockets: range amplification (checklist T15), the per-link connection cap, and
tokens kept out of the serve log (T8) however long the request line.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import Gateway, Link

SIZE = 1_000_003
BIG = 24 << 20  # large enough that a client that stops reading keeps its download running


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=SIZE))


@pytest.fixture(scope="module")
def data(link: Link) -> bytes:
    return link.path.read_bytes()


def raw_request(gw: Gateway, request_line: bytes, *headers: bytes) -> socket.socket:
    sock = socket.create_connection((gw.host, gw.http), timeout=30)
    sock.sendall(request_line + b"\r\n" + b"".join(h + b"\r\n" for h in (b"Host: imagehub", *headers)) + b"\r\n")
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and whatever body bytes came with them."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the headers: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def raw_get(link: Link, *headers: bytes, method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection; the whole body, read up to Content-Length."""
    path = urlsplit(link.http).path.encode()
    with raw_request(link.gw, method + b" " + path + b" HTTP/1.1", b"Connection: close", *headers) as sock:
        status, response_headers, body = read_head(sock)
        length = int(response_headers.get("content-length", "0")) if method != b"HEAD" else 0
        while len(body) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed before the end of the body"
            body += chunk
        return status, response_headers, body


def metric_values(gw: Gateway) -> dict[str, float]:
    port = json.loads((gw.catalog.settings.data_dir / "gateway-ports.json").read_text())["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def assert_no_http_left(gw: Gateway) -> None:
    """Nothing left behind: no HTTP connection or transfer still counted by the server."""
    deadline = time.monotonic() + 10
    while True:
        values = metric_values(gw)
        left = (values['imagehub_connections{protocol="http"}'], values['imagehub_active_transfers{protocol="http"}'])
        if left == (0, 0):
            return
        assert time.monotonic() < deadline, f"HTTP connections/transfers left open: {left}"
        time.sleep(0.05)


def test_t15_64_open_ended_ranges_send_the_whole_file_once(link: Link, data: bytes) -> None:
    status, headers, body = raw_get(link, b"Range: bytes=" + b",".join([b"0-"] * 64))
    assert status == 200
    assert headers["content-length"] == str(SIZE) and "content-range" not in headers
    assert body == data
    assert_no_http_left(link.gw)


def test_t15_ranges_adding_up_past_the_file_send_it_whole(link: Link, data: bytes) -> None:
    status, headers, body = raw_get(link, b"Range: bytes=0-600000,400000-")
    assert status == 200 and headers["content-length"] == str(SIZE) and body == data


def test_t15_more_than_16_ranges_send_the_whole_file(link: Link, data: bytes) -> None:
    ranges = [f"{i * 1000}-{i * 1000 + 9}" for i in range(17)]
    status, headers, body = raw_get(link, b"Range: bytes=" + ",".join(ranges).encode())
    assert status == 200 and headers["content-length"] == str(SIZE) and body == data
    status, headers, body = raw_get(link, b"Range: bytes=" + ",".join(ranges[:16]).encode())
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert body.count(b"Content-Range: bytes ") == 16
    assert int(headers["content-length"]) == len(body)


def test_t15_adjacent_ranges_merge_into_one_single_part_206(link: Link, data: bytes) -> None:
    status, headers, body = raw_get(link, b"Range: bytes=0-9,10-19")
    assert status == 206
    assert headers["content-range"] == f"bytes 0-19/{SIZE}"
    assert headers["content-type"] == "application/octet-stream"
    assert body == data[:20]
    status, headers, body = raw_get(link, b"Range: bytes=100-199,50-120,0-49")
    assert status == 206 and headers["content-range"] == f"bytes 0-199/{SIZE}" and body == data[:200]


@pytest.mark.parametrize(
    "spec",
    [
        "²-5".encode(),
        "0-²".encode(),
        "٣-5".encode(),
        b"1" * 4400 + b"-",
        b"0-" + b"9" * 4400,
        b"-" + b"9" * 4400,
        b"0-" + b"9" * 20,
    ],
    ids=[
        "superscript",
        "superscript-last",
        "arabic-indic",
        "4400-digit-first",
        "4400-digit-last",
        "4400-suffix",
        "20-digits",
    ],
)
def test_t15_non_ascii_or_overlong_numbers_are_416(link: Link, spec: bytes) -> None:
    status, headers, body = raw_get(link, b"Range: bytes=" + spec)
    assert status == 416, spec[:20]
    assert headers["content-range"] == f"bytes */{SIZE}"
    assert body == b""
    assert_no_http_left(link.gw)


def test_per_link_http_cap_refuses_one_download_too_many(gw: Gateway) -> None:
    big = gw.link(gw.image(size=BIG))
    cap = gw.catalog.settings.gateway.max_connections_per_link
    path = urlsplit(big.http).path.encode()
    held: list[socket.socket] = []
    try:
        for _ in range(cap):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that barely reads
            sock.settimeout(30)
            sock.connect((gw.host, gw.http))
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: imagehub\r\n\r\n")
            held.append(sock)
            status, _, _ = read_head(sock)  # the headers go out once the download holds its slot
            assert status == 200
        status, headers, body = raw_get(big)
        assert status == 429
        assert headers["retry-after"] == "5"
        assert body == b"too many downloads of this link at once; try again shortly\n"
        assert b"too_many" not in body and b"reason" not in body
        # The metadata stays available, and other links are not affected.
        assert raw_get(big, method=b"HEAD")[0] == 200
        other = gw.link(gw.image(size=10_000))
        assert raw_get(other)[0] == 200
        # One download ends: its slot is free again.
        held.pop().close()
        deadline = time.monotonic() + 10
        while (status := raw_get(big, b"Range: bytes=0-99")[0]) == 429:
            assert time.monotonic() < deadline, "the closed download's slot was never freed"
            time.sleep(0.05)
        assert status == 206
    finally:
        for sock in held:
            sock.close()
    assert_no_http_left(gw)


def test_t8_overlong_request_line_logs_no_token(gw: Gateway, link: Link) -> None:
    path = urlsplit(link.http).path.encode()
    with raw_request(gw, b"GET " + path + b"?" + b"a" * 9000 + b" HTTP/1.1") as sock:
        status, _, _ = read_head(sock)
    assert status == 400
    # A failing handler's traceback, too: a header line past 8 KiB quoting the token.
    with raw_request(gw, b"GET " + path + b" HTTP/1.1", b"Referer: http://x" + path + b"b" * 9000) as sock:
        assert read_head(sock)[0] == 400
    assert raw_get(link)[0] == 200  # the server carries on; its access-log line names the link id
    deadline = time.monotonic() + 10
    while not ("Error handling request" in (log := gw.log_text()) and f"link={link.id} proto=http" in log):
        assert time.monotonic() < deadline, "the bad request or the download was never logged"
        time.sleep(0.05)
    assert link.token not in log
    secret = link.token.split(".", 1)[1]
    assert not re.search(re.escape(secret[:12]), log), "part of the token reached the log"
    assert "/d/<redacted>/" in log
