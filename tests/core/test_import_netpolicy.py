"""The SSRF guard with `import.allow_private_networks = false`."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Invalid
from core.catalog.models import AuditEvent, Image, Status
from core.importer import sources
from core.importer.netpolicy import IPAddress, Policy, PolicyRefused, SourceUrl, is_public
from core.importer.submit import submit_import
from core.rules.redaction import redact
from tests.conftest import People
from tests.importkit import OS, HttpBehaviour, http_server, image_row, make_disk, port_of, run_job

REFUSED = "source refused by the network policy"


@pytest.fixture
def guarded(catalog: Catalog) -> Catalog:
    catalog.settings.import_.allow_private_networks = False
    return catalog


def submit(catalog: Catalog, people: People, url: str) -> dict[str, Any]:
    return submit_import(catalog, people.owner, name="x", url=url, size_gb=20, **OS)


def images(catalog: Catalog) -> list[Image]:
    with db.read_session(catalog.engine) as session:
        return list(session.exec(select(Image)))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/disk.qcow2",
        "http://10.0.0.1/disk.qcow2",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/disk.qcow2",
        "http://localhost/disk.qcow2",
        "https://127.0.0.1/disk.qcow2",
        "ftp://user:pw@10.1.2.3/disk.qcow2",
        "http://[::ffff:127.0.0.1]/disk.qcow2",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0/disk.qcow2",
        "http://192.168.1.10/disk.qcow2",
        "http://[fd00::1]/disk.qcow2",
    ],
)
def test_private_destinations_are_refused_before_any_image_exists(guarded: Catalog, people: People, url: str) -> None:
    with pytest.raises(PolicyRefused, match=REFUSED) as caught:
        submit(guarded, people, url)
    assert caught.value.exit_code == 2
    assert "pw" not in str(caught.value)
    assert images(guarded) == []
    with db.read_session(guarded.engine) as session:
        refusal = session.exec(select(AuditEvent).where(AuditEvent.outcome == "refused")).one()
    assert refusal.action == "image.import" and "pw@" not in (refusal.detail or "")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://2130706433/disk", "is not a dotted-quad IPv4 address"),
        ("http://0x7f.1/disk", "is not a dotted-quad IPv4 address"),
        ("http://127.1/disk", "is not a dotted-quad IPv4 address"),
        ("http://017700000001/disk", "is not a dotted-quad IPv4 address"),
        ("file:///etc/passwd", "url scheme file is not allowed"),
        ("gopher://example.com/", "url scheme gopher is not allowed"),
        ("example.com/disk.qcow2", "url needs a scheme"),
        ("http://example.com:8080/disk", "url port 8080 is not allowed"),
        ("http://example.com:22/disk", "url port 22 is not allowed"),
        ("http:///disk", "url has no host"),
    ],
)
def test_url_spelling_scheme_and_port_are_checked(guarded: Catalog, people: People, url: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        submit(guarded, people, url)
    assert images(guarded) == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("::127.0.0.1", False),
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo hiding 127.0.0.1
    ],
)
def test_address_classification_sees_through_ipv6_transition_forms(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_credentials_are_redacted() -> None:
    assert redact("ftp://user:secret@host:21/a/b.qcow2") == "ftp://user:***@host:21/a/b.qcow2"
    source = Policy().parse("ftp://user:p%40ss@example.com/disk.qcow2")
    assert source.password == "p@ss"
    assert source.display == "ftp://user:***@example.com/disk.qcow2"
    assert "p@ss" not in repr(source)


def test_u7_query_and_fragment_are_redacted_like_a_password() -> None:
    signed = "https://bucket.example.com/x.qcow2?X-Amz-Signature=abc123&X-Amz-Expires=60"
    assert redact(signed) == "https://bucket.example.com/x.qcow2?***"
    assert redact("http://u:pw@h/x.img?token=t0k#frag=f") == "http://u:***@h/x.img?***#***"
    assert redact("https://h/x.img") == "https://h/x.img"
    source = Policy().parse(signed)
    assert source.display == "https://bucket.example.com/x.qcow2?***"
    assert source.request_target == "/x.qcow2?X-Amz-Signature=abc123&X-Amz-Expires=60"  # the worker's request
    with pytest.raises(Invalid) as refused:
        Policy().parse("http://h:99999/x.img?sig=abc123")
    assert "abc123" not in str(refused.value)


class FirstHopOnly(Policy):
    """Treats the literal 127.0.0.1 as an allowed (public) host, standing in for an internet server;
    every other name keeps the real rule. Only the redirect handling is under test."""

    def address_allowed(self, address: IPAddress, source: SourceUrl) -> bool:
        return source.host == "127.0.0.1" or super().address_allowed(address, source)


def test_redirect_from_an_allowed_host_to_loopback_is_refused(tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qcow2")
    behaviour = HttpBehaviour(files={"/disk.qcow2": disk})
    with http_server(behaviour) as base:
        port = port_of(base)
        behaviour.redirects["/start"] = f"http://localhost:{port}/disk.qcow2"
        behaviour.redirects["/elsewhere"] = "/disk.qcow2"
        policy = FirstHopOnly(allowed_ports=(port,), allow_private_networks=False)
        sink = sources.StagedFile(tmp_path / "staged", cap=1 << 30, progress=lambda done, total: None)
        sink.open()
        try:
            # A redirect to the same allowed host is followed...
            sources.fetch_url(policy, policy.parse(f"{base}/elsewhere"), sink, tmp_path / "meta.json")
            assert sink.written == disk.stat().st_size
            sink.reset()
            # ...one to loopback under another name is refused before connecting.
            with pytest.raises(PolicyRefused, match=REFUSED):
                sources.fetch_url(policy, policy.parse(f"{base}/start"), sink, tmp_path / "meta.json")
        finally:
            sink.close()
    assert [r["path"] for r in behaviour.requests] == ["/elsewhere", "/disk.qcow2", "/start"]
    assert sink.written == 0


def test_too_many_redirects_are_refused(tmp_path: Path) -> None:
    behaviour = HttpBehaviour(redirects={f"/r{i}": f"/r{i + 1}" for i in range(10)})
    with http_server(behaviour) as base:
        policy = Policy(allowed_ports=(port_of(base),), allow_private_networks=True)
        sink = sources.StagedFile(tmp_path / "staged", cap=1 << 30, progress=lambda done, total: None)
        sink.open()
        try:
            with pytest.raises(Exception, match="source redirected more than 5 times"):
                sources.fetch_url(policy, policy.parse(f"{base}/r0"), sink, tmp_path / "meta.json")
        finally:
            sink.close()
    assert len(behaviour.requests) == 6


def test_worker_checks_the_address_again_dns_rebinding(
    guarded: Catalog, people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolved to a public address at submit time and to loopback when the worker connects:
    the worker checks what it connects to, so the import fails and the server is never reached."""
    disk = make_disk(tmp_path, "qcow2")
    behaviour = HttpBehaviour(files={"/disk.qcow2": disk})
    with http_server(behaviour) as base:
        port = port_of(base)
        guarded.settings.import_.allowed_ports = [port]
        answers = iter(["93.184.216.34", "127.0.0.1"])
        real = socket.getaddrinfo

        def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
            if host == "images.example.test":
                address = next(answers)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        view = submit(guarded, people, f"http://images.example.test:{port}/disk.qcow2")
        run_job(guarded, view["job_id"])
    image = image_row(guarded, view["id"])
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None and image.error.startswith(REFUSED)
    assert behaviour.requests == []
