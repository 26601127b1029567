"""Every state a link can be in, each made for real: `imagehub link list --json` reports it, and the
running gateway serves or refuses that link accordingly (HTTP 200 when `active`, 503 with
Retry-After while `preparing`, the one generic 403 otherwise, logged with the state as its reason).
The state is decided once (core.links.links.link_state), so the two cannot disagree."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from core.accounts import accounts
from core.catalog import db
from core.catalog.clock import utcnow
from core.catalog.models import Image, Job, Status
from core.catalog.models import Link as LinkRow
from core.images import images
from core.jobs import jobs
from core.jobs.worker import Worker
from core.links import links, workbooks
from tests.gateway.conftest import Gateway, Link
from tests.gateway.test_http import request

LINK_FIELDS = {
    *("id", "kind", "image_id", "format", "filename", "sha256", "size", "virtual_size", "state"),
    *("created_by", "created_at", "expires_at", "revoked_at", "bytes_served", "bytes_received"),
}
HTTP_STATUS = {links.ACTIVE: 200, links.PREPARING: 503}  # every other state: 403
CASES = {
    "active": links.ACTIVE,
    "preparing": links.PREPARING,
    "revoked": links.REVOKED,
    "expired": links.EXPIRED,
    "image_unavailable": links.IMAGE_UNAVAILABLE,
    "tenant_changed": links.TENANT_CHANGED,
    "access_lost": links.ACCESS_LOST,
    "file_missing": links.FILE_MISSING,
    "workbook_file_missing": links.FILE_MISSING,
    "export_failed": links.EXPORT_FAILED,
}


def created(gw: Gateway, made: links.Created) -> Link:
    return Link(gw, links.describe(gw.catalog, made.view["id"], made.token), made.token)


def set_image(gw: Gateway, image_id: str, **values: object) -> None:
    with db.write_session(gw.catalog.engine) as session:
        session.exec(update(Image).where(col(Image.id) == image_id).values(**values))


def preparing(gw: Gateway) -> tuple[Link, int]:
    """A qcow2 link whose export a worker holds (leased for 10 minutes) but has not finished."""
    image_id = gw.image(size=1000)
    now = utcnow()
    with db.write_session(gw.catalog.engine) as session:
        job = jobs.submit(session, "export", image_id, {"format": "qcow2"})
        job.state, job.lease_owner = jobs.RUNNING, "test-holder"
        job.lease_expires_at, job.progress_at = now + timedelta(minutes=10), now
        session.add(job)
        session.flush()
        assert job.id is not None
        job_id = job.id
    made = links.create_link(gw.catalog, gw.actor("acme-owner"), image_id, "qcow2")
    assert made.job_id == job_id  # the running export is the one the link waits for
    return created(gw, made), job_id


def export_failed(gw: Gateway) -> Link:
    """A raw link to a qcow2 image whose file is not qcow2: qemu-img convert fails for real."""
    image_id = gw.image(size=4096)
    stored = gw.catalog.store.image_path(image_id, "raw")
    stored.rename(gw.catalog.store.image_path(image_id, "qcow2"))
    set_image(gw, image_id, disk_format="qcow2")
    made = links.create_link(gw.catalog, gw.actor("acme-owner"), image_id, "raw")
    assert made.job_id is not None
    worker = Worker(gw.catalog, kinds=["export"], max_concurrent=1, label="test")
    try:
        job = worker.run_until(made.job_id, timeout=60)
    finally:
        worker.join()
    assert job is not None and job.state == jobs.FAILED, job
    return created(gw, made)


@pytest.fixture(scope="module")
def made(gw: Gateway) -> Iterator[dict[str, Link]]:
    owner = gw.actor("acme-owner")
    made: dict[str, Link] = {"active": gw.link(gw.image(size=1000))}
    made["preparing"], held = preparing(gw)

    made["revoked"] = gw.link(gw.image(size=1000))
    made["revoked"].revoke()

    made["expired"] = gw.link(gw.image(size=1000))
    with db.write_session(gw.catalog.engine) as session:
        past = utcnow() - timedelta(seconds=1)
        session.exec(update(LinkRow).where(col(LinkRow.id) == made["expired"].id).values(expires_at=past))

    # No service leaves an image's links unrevoked once it is not `available` (deleting one revokes
    # them, and the server finishes a deletion that stopped half-way): the row is changed by hand.
    made["image_unavailable"] = gw.link(image_id := gw.image(size=1000))
    set_image(gw, image_id, status=Status.IMPORT_FAILED)

    made["tenant_changed"] = gw.link(image_id := gw.image(size=1000))
    with db.read_session(gw.catalog.engine) as session:
        globex = images.tenant_id_by_name(session, "globex")
    set_image(gw, image_id, tenant_id=globex)

    done = gw.cli("account", "create", "states-mover", "--tenant", "acme", "--role", "member", account="admin")
    assert done.returncode == 0, done.stderr
    made["access_lost"] = gw.link(gw.image(size=1000), account="states-mover")
    accounts.set_account(gw.catalog, gw.actor("admin"), "states-mover", tenant="globex")

    made["file_missing"] = gw.link(image_id := gw.image(size=1000))
    gw.catalog.store.image_path(image_id, "raw").unlink()

    workbook = created(gw, workbooks.create_workbook_link(gw.catalog, owner))
    links.workbook_file(gw.catalog, workbook.id, workbook.filename).unlink()
    made["workbook_file_missing"] = workbook

    made["export_failed"] = export_failed(gw)
    yield made
    with db.write_session(gw.catalog.engine) as session:
        job = session.get(Job, held)
        assert job is not None
        jobs.cancel(session, job)


def test_link_list_reports_every_state(gw: Gateway, made: dict[str, Link]) -> None:
    done = gw.cli("link", "list", "--json", account="acme-owner")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(set(row) == LINK_FIELDS for row in rows)  # as docs/contract.md lists them
    states = {row["id"]: row["state"] for row in rows}
    assert {case: states[link.id] for case, link in made.items()} == CASES


@pytest.mark.parametrize("case", list(CASES))
def test_the_gateway_serves_or_refuses_as_link_list_says(gw: Gateway, made: dict[str, Link], case: str) -> None:
    link, state = made[case], CASES[case]
    status, headers, _ = request(link)
    assert status == HTTP_STATUS.get(state, 403), (case, status)
    if state == links.PREPARING:
        assert headers["retry-after"]
    # What a running transfer of the link is re-asked: refused with the state as reason, or still valid.
    assert links.check_links(gw.catalog, [link.id]) == {link.id: None if state in links.SERVED_STATES else state}
    assert links.describe(gw.catalog, link.id)["state"] == state  # and the TUI's link screen shows it
    shown = gw.cli("link", "show", link.id, "--json", account="acme-owner")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["state"] == state and set(view) == LINK_FIELDS  # `link show`: the same verdict, no token
    if state not in links.SERVED_STATES:
        refused = re.compile(rf"link={re.escape(link.id)} proto=http client=\S+ refused reason=(\w+)")
        assert refused.findall(gw.log_text())[-1:] == [state]


def test_a_missing_stored_file_is_not_prepared_again(gw: Gateway, made: dict[str, Link]) -> None:
    """Nothing can make a stored file again: the gateway queues no export for it (a lost checksum
    is `preparing` instead, and is made again: tests/gateway/test_http.py)."""
    link = made["file_missing"]
    statement = select(Job.id).where(Job.image_id == link.view["image_id"])
    with db.read_session(gw.catalog.engine) as session:
        before = session.exec(statement).all()
    assert request(link)[0] == 403
    with db.read_session(gw.catalog.engine) as session:
        assert session.exec(statement).all() == before


def test_link_show_is_not_found_outside_the_tenant_and_for_unknown_ids(gw: Gateway, made: dict[str, Link]) -> None:
    link = made["active"]
    other = gw.cli("link", "show", link.id, account="globex-owner")
    assert other.returncode == 3 and other.stderr.strip() == f"imagehub: error: link {link.id} not found", other.stderr
    unknown = gw.cli("link", "show", "lnk-zzzzzzzz", account="acme-owner")
    assert unknown.returncode == 3, unknown.stderr
    shown = gw.cli("link", "show", link.id, account="acme-viewer")  # a view-only member sees its tenant's links
    assert shown.returncode == 0 and f"state:        {links.ACTIVE}" in shown.stdout, shown.stdout
