"""The listing query (core.images.query) is one definition with two runners: SQLAlchemy (every catalog,
the TUI, the export) and sqlite3 (`image list` on an up-to-date SQLite catalog). Both give the same
views and the same refusals; the sqlite3 reader steps aside for anything but a current SQLite catalog."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError
from core.catalog.models import Image, Status
from core.catalog.reader import SCHEMA_HEAD, SqliteReader, open_sqlite_reader
from core.images.images import ImageQuery, count_images, edit_image, list_images
from core.images.query import read_views
from core.rules.actor import Actor, find_actor
from tests.conftest import BACKENDS, People
from tests.factories import make_image

QUERIES = [
    ImageQuery(),
    ImageQuery(status="deleted"),
    ImageQuery(status="import_failed"),
    ImageQuery(text="WEB"),
    ImageQuery(text="50%_off"),
    ImageQuery(text="img-"),
    ImageQuery(tenant="acme", sort="name", descending=False),
    ImageQuery(tenant="globex"),
    ImageQuery(sort="size", limit=3),
    ImageQuery(sort="id", descending=False, offset=2),
    ImageQuery(sort="updated_at", limit=2, offset=1),
    ImageQuery(status="bogus"),
    ImageQuery(sort="bogus"),
    ImageQuery(tenant="nowhere"),
]


@pytest.fixture
def varied(catalog: Catalog, people: People) -> Catalog:
    for n, status in enumerate([Status.AVAILABLE, Status.IMPORTING, Status.IMPORT_FAILED, Status.DELETED] * 2):
        make_image(catalog, people.owner, status, name=f"web-{n}", with_file=n % 3 == 0, size_gb=20 + n)
    make_image(catalog, people.owner, Status.AVAILABLE, name="50%_off sale")
    make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-web")
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="dated")
    edit_image(catalog, people.owner, image_id, description="naïve café ✓")
    with db.write_session(catalog.engine) as session:  # a URL source is redacted on the way out
        image = session.get(Image, image_id)
        assert image is not None
        image.source = "https://user:secret@example.org/disk.qcow2?signature=1"
        session.add(image)
    return catalog


@pytest.fixture
def reader(varied: Catalog) -> Iterator[SqliteReader]:
    opened = open_sqlite_reader(varied.settings.database_url, 5)
    assert opened is not None
    yield opened
    opened.close()


def outcome(run: Any) -> Any:
    try:
        return list(run())
    except ImagehubError as exc:
        return type(exc).__name__, str(exc), exc.exit_code


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_sqlite3_and_sqlalchemy_list_the_same(varied: Catalog, reader: SqliteReader, people: People, query: ImageQuery):
    for actor in (people.admin, people.owner, people.viewer, people.other_owner):
        same_actor = find_actor(reader.rows, actor.name)
        assert same_actor == actor
        expected = outcome(lambda a=actor: list_images(varied, a, query))
        assert outcome(lambda a=same_actor: read_views(reader, a, query)) == expected
    assert outcome(lambda: read_views(reader, people.owner, ImageQuery())) != []


def test_counts_follow_the_same_filters(varied: Catalog, people: People):
    listed = list_images(varied, people.owner, ImageQuery(text="web"))
    counted = count_images(varied, people.owner, ImageQuery(text="web", limit=1))  # all pages
    assert counted == len(listed) == 6  # web-0 to web-7 but the two deleted


def test_an_account_without_tenant_sees_nothing(varied: Catalog, reader: SqliteReader):
    nobody = Actor(account_id=999, name="ghost", role="member", perm="view", tenant_id=None)
    assert list_images(varied, nobody) == list(read_views(reader, nobody, ImageQuery())) == []


def test_the_reader_steps_aside_for_anything_but_a_current_sqlite_catalog(varied: Catalog, tmp_path):
    url = varied.settings.database_url
    assert open_sqlite_reader("postgresql+psycopg://u@127.0.0.1/x", 5) is None
    assert open_sqlite_reader(f"sqlite:///{tmp_path / 'missing.db'}", 5) is None
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    assert open_sqlite_reader(f"sqlite:///{tmp_path / 'junk.db'}", 5) is None
    with varied.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    assert open_sqlite_reader(url, 5) is None  # an older schema: the full path migrates it
    with varied.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{SCHEMA_HEAD}'")
    reader = open_sqlite_reader(url, 5)
    assert reader is not None
    reader.close()


def test_the_reader_connects_like_the_engine(varied: Catalog, reader: SqliteReader):
    def pragmas(rows: Any) -> list[Any]:
        return [rows(f"PRAGMA {name}", {})[0][0] for name in ("journal_mode", "busy_timeout", "foreign_keys")]

    with db.read_session(varied.engine) as session:
        engine_pragmas = pragmas(db.rows_in(session))
    assert pragmas(reader.rows) == ["wal", 5000, 1]
    assert engine_pragmas == ["wal", int(varied.settings.database.busy_timeout_seconds * 1000), 1]


@BACKENDS
def test_the_name_filter_ignores_case_and_takes_like_characters_literally(catalog: Catalog, people: People) -> None:
    mixed = make_image(catalog, people.owner, Status.AVAILABLE, name="Web-Frontend")
    percent = make_image(catalog, people.owner, Status.AVAILABLE, name="50%_OFF sale")
    make_image(catalog, people.owner, Status.AVAILABLE, name="5000 offers")
    for text in ("web-front", "WEB-FRONT", "wEb"):
        assert [i["id"] for i in list_images(catalog, people.owner, ImageQuery(text=text))] == [mixed]
    assert [i["id"] for i in list_images(catalog, people.owner, ImageQuery(text="50%_off"))] == [percent]
