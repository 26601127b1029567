"""CatalogWatch: on SQLite it tells whether anything was committed since the last look, whoever
committed it; elsewhere every look answers "maybe changed"."""

from __future__ import annotations

from core.catalog.catalog import Catalog
from core.catalog.watch import CatalogWatch
from core.images.images import ImageQuery, count_images
from tests.conftest import People
from tests.tui.conftest import add_images


def test_a_commit_by_any_connection_is_seen_once(catalog: Catalog, people: People) -> None:
    watch = CatalogWatch(catalog.settings.database_url)
    try:
        assert watch.can_tell
        assert watch.changed()  # the first look
        assert not watch.changed() and not watch.changed()
        count_images(catalog, people.admin, ImageQuery())  # reading commits nothing
        assert not watch.changed()
        add_images(catalog)  # a write through the catalog's own pool
        assert watch.changed()
        assert not watch.changed()
    finally:
        watch.close()


def test_without_sqlite_every_look_may_have_changed() -> None:
    watch = CatalogWatch("postgresql+psycopg://imagehub@127.0.0.1/imagehub")
    assert not watch.can_tell
    assert watch.changed() and watch.changed()
    watch.close()
