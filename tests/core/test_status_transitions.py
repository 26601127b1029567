"""`lifecycle.transition`, the one function that changes an image's status: every allowed change
writes status, updated_at and its audit entry; every other change raises and writes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest
from sqlmodel import col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.models import AuditEvent, Image, Status
from core.images import images
from core.rules import lifecycle
from core.rules.lifecycle import Operation
from tests.conftest import People
from tests.factories import image_row, make_image

ALLOWED_PAIRS = [(before, after) for before, targets in lifecycle.TRANSITIONS.items() for after in sorted(targets)]
REFUSED_PAIRS = [
    (before, after)
    for before, after in product(Status, Status)
    if after not in lifecycle.TRANSITIONS.get(before, frozenset())
]


def _events(catalog: Catalog, image_id: str) -> list[AuditEvent]:
    with db.read_session(catalog.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.target == image_id).order_by(col(AuditEvent.id))))


def _transition(catalog: Catalog, image_id: str, to_status: Status, **kwargs: Any) -> None:
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        lifecycle.transition(session, image, to_status, **kwargs)


def test_the_table_follows_the_diagram():
    diagram = {
        Status.CREATING: {Status.AVAILABLE, Status.IMPORT_FAILED},
        Status.IMPORTING: {Status.AVAILABLE, Status.IMPORT_FAILED},
        Status.AVAILABLE: {Status.DELETING},
        Status.IMPORT_FAILED: {Status.DELETING},
        Status.DELETING: {Status.DELETED},
        Status.DELETED: {Status.AVAILABLE, Status.IMPORT_FAILED},
    }
    assert diagram == lifecycle.TRANSITIONS
    # the operations agree with it: delete starts from exactly the statuses that may become deleting
    assert lifecycle.ALLOWED[Operation.DELETE] == {
        s for s, to in lifecycle.TRANSITIONS.items() if Status.DELETING in to
    }
    assert lifecycle.ALLOWED[Operation.RESTORE] == {Status.DELETED}


@pytest.mark.parametrize(("before", "after"), ALLOWED_PAIRS)
def test_an_allowed_transition_writes_status_updated_at_and_audit(
    catalog: Catalog, people: People, before: Status, after: Status
):
    image_id = make_image(catalog, people.owner, before)
    count = len(_events(catalog, image_id))
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    _transition(
        catalog, image_id, after, actor="tester", action="image.test", outcome="ok", reason="why", now=at, extra=7
    )
    row = image_row(catalog, image_id)
    assert row is not None and row.status == after and row.updated_at == at
    if after == Status.DELETING:
        assert row.status_before_delete == before
    if after == Status.DELETED:
        assert row.deleted_at == at
    if before == Status.DELETED:
        assert row.status_before_delete is None and row.deleted_at is None
    events = _events(catalog, image_id)
    assert len(events) == count + 1
    event = events[-1]
    assert (event.actor, event.action, event.outcome, event.reason) == ("tester", "image.test", "ok", "why")
    assert json.loads(event.detail or "{}") == {"extra": 7}


def test_without_an_action_no_audit_entry_is_written(catalog: Catalog, people: People):
    image_id = make_image(catalog, people.owner, Status.AVAILABLE)
    count = len(_events(catalog, image_id))
    started = utcnow()
    _transition(catalog, image_id, Status.DELETING, actor="tester")
    row = image_row(catalog, image_id)
    assert row is not None and row.status == Status.DELETING and row.updated_at >= started
    assert len(_events(catalog, image_id)) == count


@pytest.mark.parametrize(("before", "after"), REFUSED_PAIRS)
def test_a_disallowed_transition_raises_and_writes_nothing(
    catalog: Catalog, people: People, before: Status, after: Status
):
    image_id = make_image(catalog, people.owner, before)
    row_before = image_row(catalog, image_id)
    assert row_before is not None
    events_before = len(_events(catalog, image_id))
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        with pytest.raises(lifecycle.IllegalTransition, match=f"{before} -> {after}"):
            lifecycle.transition(
                session, image, after, actor="tester", action="image.test", now=utcnow() + timedelta(days=1)
            )
        assert image.model_dump() == row_before.model_dump()  # not even the object in memory changed
    assert image_row(catalog, image_id).model_dump() == row_before.model_dump()
    assert len(_events(catalog, image_id)) == events_before


def test_delete_and_restore_keep_their_audit_trail(catalog: Catalog, people: People):
    image_id = make_image(catalog, people.owner, Status.IMPORT_FAILED)
    count = len(_events(catalog, image_id))
    (deleted,) = images.delete_images(catalog, people.owner, [image_id])
    (restored,) = images.restore_images(catalog, people.owner, [image_id])
    assert deleted.ok and restored.ok and restored.status == Status.IMPORT_FAILED
    written = [
        (e.actor, e.action, e.outcome, e.reason, json.loads(e.detail or "null")) for e in _events(catalog, image_id)
    ]
    assert written[count:] == [
        ("acme-owner", "image.delete", "ok", None, {"previous": "import_failed"}),
        ("acme-owner", "image.restore", "ok", None, {"status": "import_failed"}),
    ]
