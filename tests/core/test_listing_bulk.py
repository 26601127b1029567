"""Bulk listing: rows read with Core selects (no ORM object per row), one row->view function, batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from core.catalog.catalog import Catalog
from core.catalog.clock import iso
from core.catalog.models import Image, Status
from core.images import images
from core.images.images import ImageQuery, edit_image, get_image, image_view, iter_images, list_images
from core.images.views import stamp
from tests.conftest import BACKENDS, People
from tests.factories import make_image

pytestmark = BACKENDS


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime(2026, 1, 2, 3, 4, 5),
        datetime(2026, 1, 2, 3, 4, 5, 999_999),
        datetime(2026, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 7, 30, tzinfo=timezone(timedelta(hours=8))),  # the day before in UTC
        datetime(2026, 6, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_list_timestamps_are_the_same_strings_as_clock_iso(catalog: Catalog, value: datetime | None):
    assert stamp(value) == iso(value)


def test_listing_builds_no_orm_object_per_row(catalog: Catalog, people: People):
    for n in range(5):
        make_image(catalog, people.owner, Status.AVAILABLE, name=f"web-{n}")
    loaded: list[object] = []

    def on_load(target: Image, _context: object) -> None:
        loaded.append(target)

    event.listen(Image, "load", on_load)
    try:
        listed = list_images(catalog, people.owner)
        assert get_image(catalog, people.owner, listed[0]["id"])["id"] == listed[0]["id"]
    finally:
        event.remove(Image, "load", on_load)
    assert len(listed) == 5
    assert len(loaded) == 1  # only `show` loaded its one image: the hook sees ORM loads


def test_a_listed_image_is_the_shown_image(catalog: Catalog, people: People):
    image_id = make_image(catalog, people.owner, Status.DELETED, name="binned")
    edit_image(catalog, people.owner, image_id, description="naïve café ✓")
    (listed,) = list_images(catalog, people.owner, ImageQuery(status="deleted"))
    shown = get_image(catalog, people.owner, image_id)
    assert {k: v for k, v in shown.items() if k not in ("vms", "progress")} == listed
    assert listed["deleted_at"] is not None and listed["deleted_at"].endswith("Z")
    assert listed["description"] == "naïve café ✓" and listed["os_name"] == "CentOS 7.9 x86_64"
    assert listed["tenant"] == "acme"


def test_image_view_of_a_loaded_row_is_the_row_view(catalog: Catalog, people: People):
    image = Image(
        id="img-00000001", name="x", description="", tenant_id=1, os_type="Linux", platform="Ubuntu",
        os_version="16.04", arch="aarch64", status="available", source="https://u:p@example.org/x.img?sig=1",
        created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), updated_at=datetime(2026, 1, 2, 3, 4, 5),
    )  # fmt: skip
    view = image_view(image, "acme")
    assert view["os_name"] == "Ubuntu 16.04 aarch64"
    assert view["created_at"] == view["updated_at"] == "2026-01-02T03:04:05Z"
    assert view["deleted_at"] is None
    assert "sig=1" not in view["source"] and "u:p" not in view["source"]  # still redacted (U7)


def test_a_listing_longer_than_a_batch_streams_every_row_in_order(
    catalog: Catalog, people: People, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(images, "BATCH", 3)
    made = [make_image(catalog, people.owner, Status.AVAILABLE, name=f"n-{n:02d}") for n in range(8)]
    make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-secret")
    ascending = [i["id"] for i in iter_images(catalog, people.owner, ImageQuery(sort="name", descending=False))]
    assert ascending == made
    page = list_images(catalog, people.owner, ImageQuery(sort="name", descending=False, limit=4, offset=3))
    assert [i["id"] for i in page] == made[3:7]


def test_listed_timestamps_are_truncated_to_the_second_like_iso(catalog: Catalog, people: People):
    from core.catalog import db

    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="late")
    stored = datetime(2026, 3, 4, 5, 6, 7, 999_999, tzinfo=UTC)  # SQLite's strftime() would say :08
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        image.created_at = stored
        image.updated_at = datetime(2026, 3, 4, 13, 6, 7, tzinfo=timezone(timedelta(hours=8)))
        image.deleted_at = datetime(1999, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)
        session.add(image)
    (listed,) = list_images(catalog, people.owner)
    assert listed["created_at"] == iso(stored) == "2026-03-04T05:06:07Z"
    assert listed["updated_at"] == "2026-03-04T05:06:07Z"
    assert listed["deleted_at"] == "1999-12-31T23:59:59Z"
    shown = get_image(catalog, people.owner, image_id)
    assert (shown["created_at"], shown["updated_at"], shown["deleted_at"]) == (
        listed["created_at"], listed["updated_at"], listed["deleted_at"],
    )  # fmt: skip
