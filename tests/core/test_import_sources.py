"""URL sources on 127.0.0.1: HTTP, HTTPS (a CA made here), FTP with user and password; cut transfers
resume from where they stopped; source errors end `import_failed` with a clear reason."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed
from core.catalog.models import AuditEvent, Job, Status
from core.importer import sources
from core.importer.netpolicy import Policy
from tests.conftest import People
from tests.importkit import (
    GIB,
    HttpBehaviour,
    free_ports,
    ftp_server,
    http_server,
    import_and_wait,
    leftovers,
    make_ca_and_server_cert,
    make_disk,
    port_of,
    sha256_of,
)


def allow(catalog: Catalog, url: str, *more_ports: int) -> None:
    catalog.settings.import_.allowed_ports = [port_of(url), *more_ports]


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    return make_disk(tmp_path, "qcow2")


def test_http_source_is_imported_with_sha256_of_what_was_received(
    catalog: Catalog, people: People, qcow2: Path
) -> None:
    behaviour = HttpBehaviour(files={"/disk.qcow2": qcow2})
    with http_server(behaviour) as base:
        allow(catalog, base)
        image = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2", sha256=sha256_of(qcow2))
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(qcow2)
    assert image.virtual_size == 20 * GIB
    assert image.source == f"{base}/disk.qcow2"
    assert [r["range"] for r in behaviour.requests] == [None]


def test_https_source_is_verified_against_the_configured_ca(
    catalog: Catalog, people: People, qcow2: Path, tmp_path: Path
) -> None:
    ca, server_tls = make_ca_and_server_cert(tmp_path)
    behaviour = HttpBehaviour(files={"/disk.qcow2": qcow2})
    with http_server(behaviour, tls=server_tls) as base:
        allow(catalog, base)
        untrusted = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2")
        catalog.settings.import_.ca_bundle = str(ca)
        image = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2")
    assert untrusted.status == Status.IMPORT_FAILED
    assert untrusted.error is not None and untrusted.error.startswith("source TLS certificate not trusted")
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(qcow2)


def test_ftp_source_with_user_and_password_never_stores_the_password(
    catalog: Catalog, people: People, qcow2: Path, tmp_path: Path
) -> None:
    secret = "s3cr:t@pw"
    passive = free_ports()
    with ftp_server(qcow2.parent, "alice", secret, passive_ports=passive) as (base, commands):
        allow(catalog, base, *passive)
        hostport = base.removeprefix("ftp://")
        url = f"ftp://alice:s3cr%3At%40pw@{hostport}/{qcow2.name}"
        image = import_and_wait(catalog, people.owner, url=url)
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(qcow2)
    assert image.source == f"ftp://alice:***@{hostport}/{qcow2.name}"
    assert "PASS" in commands and any(c.startswith("RETR") for c in commands)
    with db.read_session(catalog.engine) as session:
        job = session.exec(select(Job).where(Job.image_id == image.id)).one()
        events = session.exec(select(AuditEvent)).all()
    assert job.secret and secret not in job.secret and "s3cr" not in job.secret
    assert "s3cr" not in job.params and "***" in json.loads(job.params)["url"]
    assert all("s3cr" not in f"{e.detail} {e.reason}" for e in events)
    assert "s3cr" not in catalog.store.data_dir.joinpath("catalog.db").read_bytes().decode("latin-1")


def test_ftp_wrong_password_fails_with_a_clear_reason(catalog: Catalog, people: People, qcow2: Path) -> None:
    with ftp_server(qcow2.parent, "alice", "right") as (base, _):
        allow(catalog, base)  # the login fails before any data connection
        url = f"ftp://alice:wrong@{base.removeprefix('ftp://')}/{qcow2.name}"
        image = import_and_wait(catalog, people.owner, url=url)
    assert image.status == Status.IMPORT_FAILED
    assert image.error == "FTP login refused by source (530)"
    assert leftovers(catalog) == []


def test_u2_ftp_passive_port_off_allowed_ports_is_refused(catalog: Catalog, people: People, qcow2: Path) -> None:
    passive = free_ports(1)
    with ftp_server(qcow2.parent, "alice", "pw", passive_ports=passive) as (base, commands):
        allow(catalog, base)  # the control port only
        url = f"ftp://alice:pw@{base.removeprefix('ftp://')}/{qcow2.name}"
        image = import_and_wait(catalog, people.owner, url=url)
    assert image.status == Status.IMPORT_FAILED
    assert image.error == (
        f"FTP source data port {passive[0]} is not allowed (import.allowed_ports); allowed: {port_of(base)}"
    )
    assert not any(c.startswith("RETR") for c in commands)  # refused before asking for the file
    assert leftovers(catalog) == []


def test_u2_ftp_passive_port_on_allowed_ports_goes_to_the_control_address(
    catalog: Catalog, people: People, qcow2: Path
) -> None:
    """A PASV reply naming another host (here 10.9.8.7) is not followed: the data connection goes
    to the address of the control connection, which the policy checked."""
    passive = free_ports()
    with ftp_server(qcow2.parent, "alice", "pw", passive_ports=passive, masquerade_address="10.9.8.7") as (
        base,
        commands,
    ):
        allow(catalog, base, *passive)
        url = f"ftp://alice:pw@{base.removeprefix('ftp://')}/{qcow2.name}"
        image = import_and_wait(catalog, people.owner, url=url)
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(qcow2)
    assert "PASV" in commands and any(c.startswith("RETR") for c in commands)


def test_http_cut_mid_file_resumes_with_a_range_request(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = make_disk(tmp_path, "qcow2", "64M", options="preallocation=full")
    size = source.stat().st_size
    cut = 5 * (1 << 20) + 123
    behaviour = HttpBehaviour(files={"/disk.qcow2": source}, cut_after=cut)
    with http_server(behaviour) as base:
        allow(catalog, base)
        image = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2")
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    assert [r["range"] for r in behaviour.requests] == [None, f"bytes={cut}-"]
    assert behaviour.sent == size  # nothing fetched twice


@pytest.mark.parametrize("rest", [True, False], ids=["rest", "no-rest"])
def test_ftp_cut_mid_file_resumes_with_rest(catalog: Catalog, people: People, tmp_path: Path, rest: bool) -> None:
    """With REST the transfer goes on from the cut; a server without REST sends the file again."""
    from pyftpdlib.handlers import DTPHandler

    source = make_disk(tmp_path, "qcow2", "64M", options="preallocation=full")
    state = {"sent": 0, "cut": False}

    class CuttingDTP(DTPHandler):  # the first transfer breaks off after 4 MiB
        def send(self, data: bytes) -> int:
            if not state["cut"] and state["sent"] > 4 << 20:
                state["cut"] = True
                self.close()
                return 0
            state["sent"] += len(data)
            return super().send(data)

    passive = free_ports()
    with ftp_server(source.parent, "bob", "pw", dtp_handler=CuttingDTP, rest=rest, passive_ports=passive) as (
        base,
        commands,
    ):
        allow(catalog, base, *passive)
        url = f"ftp://bob:pw@{base.removeprefix('ftp://')}/{source.name}"
        image = import_and_wait(catalog, people.owner, url=url)
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    rests = [c for c in commands if c.startswith("REST")]
    assert len(rests) == 1 and int(rests[0].split()[1]) > 4 << 20
    assert len([c for c in commands if c.startswith("RETR")]) == 2  # without REST: from byte 0 again


def test_http_404_fails_with_the_status(catalog: Catalog, people: People) -> None:
    with http_server(HttpBehaviour()) as base:
        allow(catalog, base)
        image = import_and_wait(catalog, people.owner, url=f"{base}/missing.qcow2")
    assert image.status == Status.IMPORT_FAILED
    assert image.error == "HTTP 404 from source"
    assert leftovers(catalog) == []


def test_connection_refused_fails_with_a_clear_reason(catalog: Catalog, people: People) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    catalog.settings.import_.allowed_ports = [port]
    image = import_and_wait(catalog, people.owner, url=f"http://127.0.0.1:{port}/disk.qcow2")
    assert image.status == Status.IMPORT_FAILED
    assert image.error == "source unreachable: connection refused"
    assert leftovers(catalog) == []


def test_web_page_is_not_taken_for_an_image(catalog: Catalog, people: People, tmp_path: Path) -> None:
    page = tmp_path / "index.iso"
    page.write_bytes(b"<!DOCTYPE html><html>" + b"x" * 45000 + b"</html>")
    behaviour = HttpBehaviour(files={"/ubuntu.iso": page}, content_type="text/html")
    with http_server(behaviour) as base:
        allow(catalog, base)
        image = import_and_wait(catalog, people.owner, url=f"{base}/ubuntu.iso")
        behaviour.content_type = "application/octet-stream"
        second = import_and_wait(catalog, people.owner, url=f"{base}/ubuntu.iso")
    assert image.error == "source sent a web page (text/html), not a disk image"
    assert second.error == "unsupported format: the source is a web page or text, not a disk image"
    assert leftovers(catalog) == []


def test_size_cap_is_enforced_while_streaming_without_content_length(tmp_path: Path) -> None:
    big = tmp_path / "big.raw"
    big.write_bytes(b"\x01" * (3 << 20))
    behaviour = HttpBehaviour(files={"/big.raw": big}, send_length=False)
    with http_server(behaviour) as base:
        policy = Policy(allowed_ports=(port_of(base),), allow_private_networks=True)
        sink = sources.StagedFile(tmp_path / "staged", cap=2 << 20, progress=lambda done, total: None)
        sink.open()
        try:
            with pytest.raises(Failed, match="source is larger than"):
                sources.fetch_url(policy, policy.parse(f"{base}/big.raw"), sink, tmp_path / "meta.json")
        finally:
            sink.close()
    assert sink.written <= 2 << 20


def test_a_source_that_ignores_ranges_is_fetched_again_from_the_start(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = make_disk(tmp_path, "qcow2", "64M", options="preallocation=full")
    cut = 3 << 20
    behaviour = HttpBehaviour(files={"/disk.qcow2": source}, cut_after=cut, ranges=False)
    with http_server(behaviour) as base:
        allow(catalog, base)
        image = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2")
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    assert [r["range"] for r in behaviour.requests] == [None, f"bytes={cut}-"]
    assert behaviour.sent == cut + source.stat().st_size  # the answer was 200: everything again
