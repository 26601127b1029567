"""Upload links in core: creating one (and every refusal at creation), the one writer every protocol
uses (offset rule, size rule, one writer, hashing across a lost process, holes, quota), and how an
upload ends: complete (then an import like any other, hostile files refused the same way), revoked
(`upload cancelled`) or expired (`upload expired`), leaving nothing staged."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Invalid
from core.catalog.models import AuditEvent, Image, Job, Link, Phase, Status
from core.catalog.vocabulary import LinkState
from core.importer import receiver as receiver_module
from core.importer.diskprobe import mbr
from core.importer.receiver import UploadRefused, current_offset, open_receiver
from core.importer.upload import submit_upload
from core.jobs import jobs
from core.jobs.worker import Worker
from core.links import links, uploads
from core.links.links import Refused
from tests.conftest import People
from tests.importkit import OS, image_row, leftovers, run_job

MIB = 1 << 20
GIB = 1 << 30


def disk_bytes(mib: int = 2) -> bytes:
    """A raw disk with an MBR and random data: what a user would upload."""
    data = bytearray(os.urandom(mib * MIB))
    data[:512] = mbr(len(data))
    return bytes(data)


def upload(catalog: Catalog, actor: Any, size: int, **extra: Any) -> dict[str, Any]:
    return submit_upload(catalog, actor, name="up", size_bytes=size, size_gb=20, **OS, **extra)


def token_of(view: dict[str, Any]) -> str:
    return str(view["upload"]["ftp"]).split("//", 1)[1].split("@", 1)[0]


def write_all(catalog: Catalog, view: dict[str, Any], data: bytes, step: int = 300_000) -> None:
    receiving = links.validate_upload_token(catalog, token_of(view))
    writer = open_receiver(catalog, receiving, "test")
    try:
        while writer.offset < len(data):
            writer.write(writer.offset, data[writer.offset : writer.offset + step])
        assert writer.complete
    finally:
        writer.close()


def job_of(catalog: Catalog, view: dict[str, Any]) -> Job:
    with db.read_session(catalog.engine) as session:
        job = session.get(Job, view["job_id"])
        assert job is not None
        return job


def link_row(catalog: Catalog, link_id: str) -> Link:
    with db.read_session(catalog.engine) as session:
        link = session.get(Link, link_id)
        assert link is not None
        return link


def test_an_upload_link_is_made_like_a_download_link_and_its_import_waits(catalog: Catalog, people: People) -> None:
    view = upload(catalog, people.owner, 5 * MIB)
    assert view["status"] == Status.IMPORTING
    link = view["upload"]
    assert {"id", "http", "ftp", "sftp", "sftp_command", "expires_at", "tus"} <= set(link)
    assert link["kind"] == "upload" and link["size"] == 5 * MIB and link["bytes_received"] == 0
    assert link["state"] == LinkState.ACTIVE
    token = token_of(view)
    assert link["http"].endswith(f"/u/{token}/") and link["tus"].endswith(f"/tus/{token}")
    assert set(view["upload"]["commands"]) >= {"curl_ftp", "lftp", "sftp", "curl_http", "curl_http_resume", "tus"}
    row = link_row(catalog, link["id"])
    assert row.token_hash == links.token_hash(token) and token not in row.token_hash  # only its hash is kept
    assert (row.expires_at - row.created_at) == timedelta(seconds=catalog.settings.links.ttl_seconds)
    job = job_of(catalog, view)
    assert (job.state, job.phase, job.bytes_total) == (jobs.WAITING, Phase.WAITING_FOR_UPLOAD, 5 * MIB)
    # no worker takes a job that waits for its bytes
    assert Worker(catalog, kinds=["import"]).poll_once() == []
    assert job_of(catalog, view).state == jobs.WAITING


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "--bytes must be at least 1"),
        (-5, "--bytes must be at least 1"),
        ("12k", "--bytes must be the exact size of the file in bytes"),
        ("1_000", "--bytes must be the exact size of the file in bytes"),
        ("١٢٣", "--bytes must be the exact size of the file in bytes"),
        ("1e3", "--bytes must be the exact size of the file in bytes"),
        ("", "--bytes must be the exact size of the file in bytes"),
        (22 * GIB, "is more than a source for a 20 GB image may be"),
    ],
)
def test_a_size_no_source_could_have_is_refused_and_creates_nothing(
    catalog: Catalog, people: People, size: object, message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        upload(catalog, people.owner, size)  # type: ignore[arg-type]
    with db.read_session(catalog.engine) as session:
        assert session.exec(select(Image)).all() == []
        assert session.exec(select(Link)).all() == []
        assert session.exec(select(Job)).all() == []


def test_a_size_past_the_staging_quota_and_a_bad_ttl_are_refused(catalog: Catalog, people: People) -> None:
    catalog.settings.import_.staging_quota_gb = 4 * MIB / GIB
    with pytest.raises(Invalid, match="more than the staging quota"):
        upload(catalog, people.owner, 4 * MIB + 1)
    with pytest.raises(Invalid, match="--ttl must be between"):
        upload(catalog, people.owner, MIB, ttl=catalog.settings.links.ttl_seconds + 1)
    with db.read_session(catalog.engine) as session:
        assert session.exec(select(Image)).all() == []


def test_writes_continue_exactly_at_the_offset_and_never_pass_the_size(catalog: Catalog, people: People) -> None:
    data = disk_bytes(2)
    view = upload(catalog, people.owner, len(data))
    receiving = links.validate_upload_token(catalog, token_of(view))
    writer = open_receiver(catalog, receiving, "test")
    try:
        assert writer.write(0, data[:1000]) == 1000
        for wrong in (999, 1001, 0):  # an overwrite, a hole, a restart
            with pytest.raises(UploadRefused, match="must continue at byte 1000") as refused:
                writer.write(wrong, data[wrong : wrong + 10])
            assert refused.value.offset == 1000
        with pytest.raises(UploadRefused, match=f"takes exactly {len(data)} bytes"):
            writer.write(1000, data[1000:] + b"x")
        assert current_offset(catalog, receiving) == 1000
        # a second writer, whatever its connection, is refused while the first holds the upload
        with pytest.raises(UploadRefused, match="another connection is writing this upload"):
            open_receiver(catalog, receiving, "test")
    finally:
        writer.close()
    second = open_receiver(catalog, receiving, "test")
    second.close()


def test_a_quiet_writer_gives_way_to_a_new_one_and_a_sending_one_does_not(catalog: Catalog, people: People) -> None:
    """A client whose network dropped without its connection closing comes back at once (tusd's lock
    release): the quiet writer's connection is cut; a writer still sending keeps the upload."""
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data))
    receiving = links.validate_upload_token(catalog, token_of(view))
    cuts: list[str] = []
    first = open_receiver(catalog, receiving, "test", on_release=lambda: (cuts.append("cut"), first.close()))
    first.write(0, data[:1000])
    with pytest.raises(UploadRefused, match="another connection is writing"):
        open_receiver(catalog, receiving, "test")  # refused at once: the first is sending
    assert cuts == []
    first.last_active -= receiver_module.QUIET_SECONDS  # nothing received for a while
    second = open_receiver(catalog, receiving, "test")
    assert cuts == ["cut"] and second.offset == 1000
    # another process's writer is asked through the release request its gateway polls for
    second.on_release = lambda: (cuts.append("polled"), second.close())
    second.last_active -= receiver_module.QUIET_SECONDS
    (second.path.parent / receiver_module.RELEASE_NAME).write_text("asked")
    assert receiver_module.poll_release_requests() == 1
    assert cuts == ["cut", "polled"]
    open_receiver(catalog, receiving, "test").close()


def test_a_writer_in_a_new_process_goes_on_at_once_and_the_job_hashes_every_byte(
    catalog: Catalog, people: People
) -> None:
    data = disk_bytes(3)
    view = upload(catalog, people.owner, len(data), sha256=hashlib.sha256(data).hexdigest())
    receiving = links.validate_upload_token(catalog, token_of(view))
    first = open_receiver(catalog, receiving, "test")
    first.write(0, data[: 2 * MIB + 7])
    first.close()
    second = receiver_module.Receiver(catalog, receiving, "test")  # a restarted gateway, or another node
    assert second.open() == 2 * MIB + 7
    second.write(second.offset, data[second.offset :])
    assert second.complete
    second.close()
    summary = json.loads((catalog.store.import_staging(view["id"]) / uploads.SUMMARY_NAME).read_text())
    assert summary == {"size": len(data)}  # not hashed by the gateway: by the job, from the bytes on disk
    job = run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert (job.state, image.status) == (jobs.DONE, Status.AVAILABLE), image.error
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert leftovers(catalog) == [f"images/{view['id']}.raw"]


def test_zero_runs_stay_holes_and_the_quota_is_charged_as_bytes_arrive(catalog: Catalog, people: People) -> None:
    data = bytearray(16 * MIB)
    data[:512] = mbr(len(data))
    data[15 * MIB : 15 * MIB + 4096] = os.urandom(4096)
    view = upload(catalog, people.owner, len(data))
    write_all(catalog, view, bytes(data), step=4 * MIB)
    staged = catalog.store.import_staging(view["id"]) / uploads.SOURCE_NAME
    assert staged.stat().st_size == len(data) and staged.stat().st_blocks * 512 <= 3 * MIB
    # quota: 6 MiB of random bytes pass a 4 MiB quota while they arrive
    catalog.settings.import_.staging_quota_gb = 5 * MIB / GIB
    other = upload(catalog, people.owner, 5 * MIB)
    receiving = links.validate_upload_token(catalog, token_of(other))
    writer = open_receiver(catalog, receiving, "test")
    try:
        with pytest.raises(UploadRefused, match="more than its quota"):
            for _ in range(5 * 4):
                writer.write(writer.offset, os.urandom(MIB // 4))
                writer._quota._checked = float("-inf")  # count at every write, not once a second
    finally:
        writer.close()


def test_a_complete_upload_takes_no_more_bytes_and_its_link_says_uploaded(catalog: Catalog, people: People) -> None:
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data))
    stale = links.validate_upload_token(catalog, token_of(view))
    write_all(catalog, view, data)
    assert job_of(catalog, view).state == jobs.QUEUED
    with pytest.raises(Refused) as refused:
        links.validate_upload_token(catalog, token_of(view))
    assert refused.value.reason == LinkState.UPLOADED
    shown = links.get_link(catalog, people.owner, view["upload"]["id"])
    assert (shown["state"], shown["bytes_received"]) == (LinkState.UPLOADED, len(data))
    # a running session of it is not cut (its last write may still be answered), only refused more bytes
    assert links.check_links(catalog, [view["upload"]["id"]]) == {view["upload"]["id"]: None}
    run_job(catalog, view["job_id"])
    assert image_row(catalog, view["id"]).status == Status.AVAILABLE
    # a writer whose token was checked just before the end takes nothing and leaves nothing behind
    with pytest.raises(UploadRefused, match="has ended"):
        open_receiver(catalog, stale, "test")
    assert not catalog.store.import_staging(view["id"]).exists()


def test_tokens_open_only_their_own_kind(catalog: Catalog, people: People) -> None:
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data))
    with pytest.raises(Refused) as refused:
        links.validate_token(catalog, token_of(view))
    assert refused.value.reason == "wrong_kind"
    write_all(catalog, view, data)
    run_job(catalog, view["job_id"])
    download = links.create_link(catalog, people.owner, view["id"], "raw")  # preparing: served once ready
    with pytest.raises(Refused) as refused:
        links.validate_upload_token(catalog, download.token)
    assert refused.value.reason == "wrong_kind"


def test_revoking_the_link_cancels_the_upload_and_removes_its_bytes(catalog: Catalog, people: People) -> None:
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data))
    receiving = links.validate_upload_token(catalog, token_of(view))
    writer = open_receiver(catalog, receiving, "test")
    writer.write(0, data[:5000])
    revoked = links.revoke_link(catalog, people.owner, view["upload"]["id"])
    assert revoked["state"] == LinkState.REVOKED
    image = image_row(catalog, view["id"])
    assert (image.status, image.error) == (Status.IMPORT_FAILED, "upload cancelled")
    assert job_of(catalog, view).state == jobs.FAILED
    assert not catalog.store.import_staging(view["id"]).exists()
    # the writer that still held it cannot complete it
    with pytest.raises(UploadRefused, match="cancelled or has expired"):
        writer.write(5000, data[5000:])
    writer.close()
    with pytest.raises(Refused):
        links.validate_upload_token(catalog, token_of(view))
    with db.read_session(catalog.engine) as session:
        actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.target == view["id"]))]
    assert {"image.import", "upload.create", "link.revoke", "upload.cancel"} <= set(actions)


def test_an_upload_not_finished_in_its_lifetime_expires_and_leaves_nothing(catalog: Catalog, people: People) -> None:
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data), ttl=60)
    receiving = links.validate_upload_token(catalog, token_of(view))
    writer = open_receiver(catalog, receiving, "test")
    writer.write(0, data[:4096])
    writer.close()
    with db.write_session(catalog.engine) as session:
        link = session.get(Link, view["upload"]["id"])
        assert link is not None
        link.expires_at = link.created_at  # its lifetime is over
        session.add(link)
    assert links.get_link(catalog, people.owner, view["upload"]["id"])["state"] == LinkState.EXPIRED
    Worker(catalog, kinds=["import"]).sweep()
    image = image_row(catalog, view["id"])
    assert (image.status, image.error) == (Status.IMPORT_FAILED, "upload expired")
    assert leftovers(catalog) == []


def test_an_account_deletion_cancels_its_uploads_at_the_next_sweep(catalog: Catalog, people: People) -> None:
    from core.accounts.accounts import delete_account

    view = upload(catalog, people.manager, MIB)
    delete_account(catalog, people.admin, people.manager.name)
    Worker(catalog, kinds=["import"]).sweep()
    assert image_row(catalog, view["id"]).error == "upload cancelled"


def test_a_hostile_file_uploaded_is_refused_as_one_given_by_url(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(disk_bytes(1))
    child = tmp_path / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(child)], check=True)
    data = child.read_bytes()
    view = upload(catalog, people.owner, len(data))
    write_all(catalog, view, data)
    run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert image.status == Status.IMPORT_FAILED
    assert image.error is not None and "backing file" in image.error
    assert leftovers(catalog) == []
    # the upload itself did finish: its link says so, whatever the import made of the bytes
    shown = links.get_link(catalog, people.owner, view["upload"]["id"])
    assert (shown["state"], shown["bytes_received"]) == (LinkState.UPLOADED, len(data))


def test_a_wrong_sha256_ends_the_import_failed(catalog: Catalog, people: People) -> None:
    data = disk_bytes(1)
    view = upload(catalog, people.owner, len(data), sha256="0" * 64)
    write_all(catalog, view, data)
    run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert image.status == Status.IMPORT_FAILED and image.error is not None and "SHA-256 mismatch" in image.error
    assert leftovers(catalog) == []


def test_another_tenant_sees_no_upload_link(catalog: Catalog, people: People) -> None:
    upload(catalog, people.owner, MIB)
    assert [row["kind"] for row in links.list_links(catalog, people.owner)] == ["upload"]
    assert links.list_links(catalog, people.other_owner) == []
