"""Every status × every operation against the lifecycle table, through the core services."""

from __future__ import annotations

import pytest

from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict
from core.catalog.models import Status
from core.images import images
from core.rules import lifecycle
from core.rules.display import status_word
from core.rules.lifecycle import Operation
from tests.conftest import BACKENDS, People
from tests.factories import attach_vm, image_row, make_image

pytestmark = BACKENDS

ALL = [s.value for s in Status]


def _snapshot(catalog: Catalog, image_id: str) -> dict | None:
    row = image_row(catalog, image_id)
    return None if row is None else row.model_dump()


def _run(catalog: Catalog, people: People, operation: Operation, image_id: str) -> list[images.BatchResult] | None:
    actor = people.owner
    if operation == Operation.EDIT:
        images.edit_image(catalog, actor, image_id, name="renamed", description="new remark")
        return None
    run = {
        Operation.DELETE: images.delete_images,
        Operation.RESTORE: images.restore_images,
        Operation.DESTROY: images.destroy_images,
    }[operation]
    return run(catalog, actor, [image_id])


@pytest.mark.parametrize("status", ALL)
@pytest.mark.parametrize("operation", [Operation.EDIT, Operation.DELETE, Operation.RESTORE, Operation.DESTROY])
def test_every_status_against_every_operation(catalog: Catalog, people: People, status: str, operation: Operation):
    image_id = make_image(catalog, people.owner, status, with_file=status in (Status.AVAILABLE, Status.DELETED))
    before = _snapshot(catalog, image_id)
    allowed = lifecycle.allows(status, operation)
    if operation == Operation.EDIT:
        _run(catalog, people, operation, image_id)
        after = image_row(catalog, image_id)
        assert after is not None and after.name == "renamed" and after.description == "new remark"
        assert after.status == status
        return
    (result,) = _run(catalog, people, operation, image_id) or []
    if not allowed:
        assert not result.ok and result.exit_code == Conflict.exit_code
        assert status_word(status) in (result.error or "")  # the status in people's words
        assert _snapshot(catalog, image_id) == before
        return
    assert result.ok, result.error
    after = image_row(catalog, image_id)
    if operation == Operation.DELETE:
        assert after is not None and after.status == Status.DELETED
        assert after.status_before_delete == status and after.deleted_at is not None
    elif operation == Operation.RESTORE:
        assert after is not None and after.status == Status.AVAILABLE and after.deleted_at is None
    elif operation == Operation.DESTROY:
        assert after is None
        assert catalog.store.files_of_image(image_id) == []


def test_edit_is_allowed_in_every_status(catalog: Catalog):
    assert lifecycle.ALLOWED[Operation.EDIT] == frozenset(ALL)


def test_restore_gives_back_the_status_before_deletion(catalog: Catalog, people: People):
    image_id = make_image(catalog, people.owner, Status.IMPORT_FAILED)
    (deleted,) = images.delete_images(catalog, people.owner, [image_id])
    assert deleted.ok and image_row(catalog, image_id).status == Status.DELETED
    (restored,) = images.restore_images(catalog, people.owner, [image_id])
    assert restored.ok and restored.status == Status.IMPORT_FAILED
    assert image_row(catalog, image_id).status == Status.IMPORT_FAILED


def test_delete_refused_while_vm_uses_image(catalog: Catalog, people: People):
    image_id = make_image(catalog, people.owner, Status.AVAILABLE)
    vm_id = attach_vm(catalog, image_id)
    (result,) = images.delete_images(catalog, people.owner, [image_id])
    assert not result.ok and result.exit_code == 5
    assert result.error == f"image {image_id} is used by {vm_id}"
    assert image_row(catalog, image_id).status == Status.AVAILABLE


def test_batch_acts_on_each_id_and_does_not_stop_at_a_refusal(catalog: Catalog, people: People):
    ok_first = make_image(catalog, people.owner, Status.AVAILABLE, name="a")
    busy = make_image(catalog, people.owner, Status.IMPORTING, name="b")
    ok_last = make_image(catalog, people.owner, Status.IMPORT_FAILED, name="c")
    results = images.delete_images(catalog, people.owner, [ok_first, busy, "img-missing1", ok_last])
    assert [r.ok for r in results] == [True, False, False, True]
    assert [r.exit_code for r in results] == [0, 5, 3, 0]
    assert image_row(catalog, busy).status == Status.IMPORTING


def test_destroy_keeps_the_audit_trail_and_never_reuses_the_id(catalog: Catalog, people: People):
    from sqlmodel import select

    from core.catalog import db
    from core.catalog.models import AuditEvent, IssuedId

    image_id = make_image(catalog, people.owner, Status.DELETED, with_file=True)
    assert catalog.store.files_of_image(image_id)
    (result,) = images.destroy_images(catalog, people.owner, [image_id])
    assert result.ok
    assert catalog.store.files_of_image(image_id) == []
    with db.read_session(catalog.engine) as session:
        actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.target == image_id))]
        assert "image.destroy" in actions
        assert session.get(IssuedId, image_id) is not None


def test_refusals_are_audited_with_their_reason(catalog: Catalog, people: People):
    from sqlmodel import select

    from core.catalog import db
    from core.catalog.models import AuditEvent

    image_id = make_image(catalog, people.owner, Status.IMPORTING)
    images.delete_images(catalog, people.owner, [image_id])
    with db.read_session(catalog.engine) as session:
        event = session.exec(
            select(AuditEvent).where(AuditEvent.target == image_id, AuditEvent.outcome == "refused")
        ).one()
    assert event.actor == "acme-owner" and event.action == "image.delete"
    assert "importing" in (event.reason or "")


def test_an_interrupted_deletion_is_finished(catalog: Catalog, people: People):
    from core.catalog import db
    from core.catalog.models import Image

    image_id = make_image(catalog, people.owner, Status.AVAILABLE)
    with db.write_session(catalog.engine) as session:
        row = session.get(Image, image_id)
        row.status_before_delete, row.status = row.status, Status.DELETING
        session.add(row)
    images.finish_pending_deletions(catalog)
    assert image_row(catalog, image_id).status == Status.DELETED
