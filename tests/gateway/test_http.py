"""HTTP: every RFC 9110 range form byte for byte, validators, HEAD, .sha256, refusals, health and metrics.

Abuse of ranges, the per-link connection cap and tokens in logs: tests/gateway/test_http_limits.py.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import subprocess
from urllib.parse import quote, urlsplit

import pytest

from tests.gateway.conftest import Gateway, Link


def request(link_or_gw: Link | Gateway, path: str | None = None, method: str = "GET", **headers: str):
    gw = link_or_gw.gw if isinstance(link_or_gw, Link) else link_or_gw
    if path is None:
        assert isinstance(link_or_gw, Link)
        path = urlsplit(link_or_gw.http).path
    conn = http.client.HTTPConnection(gw.host, gw.http, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=1_000_003))


@pytest.fixture(scope="module")
def data(link: Link) -> bytes:
    return link.path.read_bytes()


def test_link_urls_name_the_bound_ports_and_whole_file_matches(gw: Gateway, link: Link, data: bytes) -> None:
    assert f":{gw.http}/d/" in link.http and f":{gw.ftp}/" in link.ftp and f":{gw.sftp}/" in link.sftp
    status, headers, body = request(link)
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == f'attachment; filename="{link.filename}"'
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["etag"].startswith('"') and headers["last-modified"]


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=999000-", 999000, 1_000_002),
        ("bytes=-500", 1_000_003 - 500, 1_000_002),
        ("bytes=999999-5000000", 999999, 1_000_002),
        ("bytes=-5000000", 0, 1_000_002),
    ],
)
def test_single_suffix_and_open_ended_ranges(link: Link, data: bytes, spec: str, first: int, last: int) -> None:
    status, headers, body = request(link, Range=spec)
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert body == data[first : last + 1]
    assert headers["content-length"] == str(last - first + 1)


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        assert payload.endswith(b"\r\n")
        content_range = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-range:"))
        parts.append((content_range.split(b":", 1)[1].strip().decode(), payload[:-2]))
    return parts


def test_multiple_ranges_are_multipart_byteranges_in_the_order_asked(link: Link, data: bytes) -> None:
    status, headers, body = request(link, Range="bytes=500-599, 0-9, -16, 999000-999009")
    assert status == 206
    assert headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(headers["content-length"]) == len(body)
    size = len(data)
    parts = parse_multipart(headers["content-type"], body)
    assert parts == [
        (f"bytes 500-599/{size}", data[500:600]),
        (f"bytes 0-9/{size}", data[0:10]),
        (f"bytes {size - 16}-{size - 1}/{size}", data[-16:]),
        (f"bytes 999000-999009/{size}", data[999000:999010]),
    ]


def test_t15_overlapping_ranges_are_merged_into_one_part(link: Link, data: bytes) -> None:
    size = len(data)
    status, headers, body = request(link, Range="bytes=0-9, 500-599, -16, 999990-, 550-649")
    assert status == 206
    parts = parse_multipart(headers["content-type"], body)
    assert parts == [
        (f"bytes 0-9/{size}", data[0:10]),
        (f"bytes 500-649/{size}", data[500:650]),
        (f"bytes {size - 16}-{size - 1}/{size}", data[-16:]),
    ]
    assert int(headers["content-length"]) == len(body) < 1000


def test_unsatisfiable_range_is_416_with_the_length(link: Link, data: bytes) -> None:
    for spec in ("bytes=2000000-", "bytes=1000003-1000010", "bytes=-0"):
        status, headers, _ = request(link, Range=spec)
        assert status == 416, spec
        assert headers["content-range"] == f"bytes */{len(data)}"


def test_malformed_range_is_ignored(link: Link, data: bytes) -> None:
    for spec in ("bytes=5-1", "items=0-1", "bytes=abc"):
        status, _, body = request(link, Range=spec)
        assert status == 200 and body == data, spec


def test_if_range_with_etag_and_with_date(link: Link, data: bytes) -> None:
    _, headers, _ = request(link, method="HEAD")
    etag, modified = headers["etag"], headers["last-modified"]
    status, _, body = request(link, Range="bytes=10-19", **{"If-Range": etag})
    assert status == 206 and body == data[10:20]
    status, _, body = request(link, Range="bytes=10-19", **{"If-Range": '"another-version"'})
    assert status == 200 and body == data
    status, _, body = request(link, Range="bytes=10-19", **{"If-Range": "W/" + etag})
    assert status == 200 and body == data
    status, _, body = request(link, Range="bytes=10-19", **{"If-Range": modified})
    assert status == 206 and body == data[10:20]
    older = email.utils.formatdate(email.utils.parsedate_to_datetime(modified).timestamp() - 3600, usegmt=True)
    status, _, body = request(link, Range="bytes=10-19", **{"If-Range": older})
    assert status == 200 and body == data


def test_conditional_requests(link: Link) -> None:
    _, headers, _ = request(link, method="HEAD")
    etag = headers["etag"]
    assert request(link, **{"If-None-Match": etag})[0] == 304
    assert request(link, **{"If-Match": '"nope"'})[0] == 412
    assert request(link, method="HEAD", **{"If-Match": etag})[0] == 200


def test_head_sends_headers_only(link: Link, data: bytes) -> None:
    status, headers, body = request(link, method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(len(data))
    status, headers, body = request(link, method="HEAD", Range="bytes=5-9")
    assert status == 206 and body == b"" and headers["content-range"] == f"bytes 5-9/{len(data)}"


def test_sha256_file_checks_with_sha256sum(gw: Gateway, link: Link, tmp_path) -> None:
    status, _headers, body = request(link, urlsplit(link.http).path + ".sha256")
    assert status == 200
    assert body.decode() == f"{link.sha256}  {link.filename}\n"
    (tmp_path / link.filename).write_bytes(link.path.read_bytes())
    (tmp_path / "sums").write_bytes(body)
    done = subprocess.run(["sha256sum", "-c", "sums"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and f"{link.filename}: OK" in done.stdout


def test_refusals_are_one_generic_403(gw: Gateway, link: Link) -> None:
    other = gw.link(gw.image(size=1000))
    path = urlsplit(link.http).path
    token = link.token
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    cases = {
        "tampered": f"/d/{tampered}/{link.filename}",
        "garbage": f"/d/not-a-token/{link.filename}",
        "other image's file": f"/d/{token}/{other.filename}",
        "other link's token": f"/d/{other.token}/{link.filename}",
        "dot-dot": f"/d/{token}/{quote('../' + other.filename, safe='')}",
        "absolute": f"/d/{token}/{quote('/etc/passwd', safe='')}",
        "traversal to secret": f"/d/{token}/..%2F..%2Fsecret.key",
        "sum of another": f"/d/{token}/{other.filename}.sha256",
        "no name": f"/d/{token}/",
    }
    bodies = set()
    for what, bad in cases.items():
        status, headers, body = request(gw, bad)
        assert status == 403, what
        assert headers["x-content-type-options"] == "nosniff"
        bodies.add(body)
    assert len(bodies) == 1
    assert b"img-" not in next(iter(bodies))
    assert request(gw, path)[0] == 200


def test_token_is_checked_on_every_range_request(gw: Gateway) -> None:
    link = gw.link(gw.image(size=10_000))
    assert request(link, Range="bytes=0-99")[0] == 206
    link.revoke()
    assert request(link, Range="bytes=100-199")[0] == 403


def metrics_port(gw: Gateway) -> int:
    """The metrics listener's port, as `imagehub serve` announced it (gateway.metrics_listen, port 0)."""
    return json.loads((gw.catalog.settings.data_dir / "gateway-ports.json").read_text())["metrics"]


def test_l8_healthz_public_metrics_only_on_their_own_listener(gw: Gateway, link: Link) -> None:
    assert request(gw, "/healthz")[:1] == (200,)
    request(link, Range="bytes=0-9")
    request(gw, "/d/bad/file")
    public = request(gw, "/metrics")
    assert public[0] == 404 and b"imagehub_" not in public[2] and b"bad_token" not in public[2]
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port(gw), timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        status, headers, body = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        'imagehub_bytes_served_total{protocol="http"}',
        "imagehub_transfers_total{",
        'imagehub_active_transfers{protocol="sftp"}',
        'imagehub_refusals_total{protocol="http",reason="bad_token"}',
        "imagehub_jobs",
    ):
        assert name in text, name


def test_file_not_ready_answers_503_then_serves_once_prepared(gw: Gateway) -> None:
    import time

    from core.links import links

    link = gw.link(gw.image(size=50_000))
    served = links.validate_token(gw.catalog, link.token)
    served.sum_path.unlink()  # as if the checksum cache were lost: the link must heal itself
    status, headers, _ = request(link)
    assert status == 503 and headers["retry-after"]
    deadline = time.monotonic() + 20
    while (status := request(link)[0]) == 503:
        assert time.monotonic() < deadline, "the server's worker never prepared the file again"
        time.sleep(0.1)
    assert status == 200
    assert links.describe(gw.catalog, link.id)["sha256"] == link.sha256
