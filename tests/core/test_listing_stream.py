"""A listing streams: rows arrive `BATCH` at a time from the database (on PostgreSQL through a
server-side cursor), never all at once, whatever the catalog's size."""

from __future__ import annotations

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.images import images as images_module
from core.images.images import ImageQuery, iter_images
from tests.conftest import BACKENDS, People
from tests.factories import make_image

pytestmark = BACKENDS


def test_rows_arrive_a_batch_at_a_time(catalog: Catalog, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    made = [make_image(catalog, people.owner, Status.AVAILABLE, name=f"img-{n}") for n in range(7)]
    monkeypatch.setattr(images_module, "BATCH", 3)
    batches = list(images_module._row_batches(catalog, people.owner, ImageQuery()))
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert sorted(view["id"] for view in iter_images(catalog, people.owner)) == sorted(made)
