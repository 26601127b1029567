"""The image list's columns (architecture and size of their own, nothing essential cut at 80 or 120
columns), the footer (every key that fits, the rest under `?`), people's words shared with the
command line, and a list that queries nothing while the catalog does not change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rich.cells import cell_len
from textual.widgets._footer import FooterKey

from core.catalog.catalog import Catalog
from core.images.images import edit_image
from core.rules.display import human_size, size_in_gb
from tests.conftest import People
from tests.tui.conftest import image_list, make_app, move_to, settle
from tui.i18n import set_language
from tui.screens.help import key_rows
from tui.widgets.format import human_size as tui_human_size


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


def cell(app: Any, image_id: str, column: str) -> str:
    table = image_list(app).table
    return str(table.get_cell(image_id, column)).strip()


def table_width(app: Any) -> int:
    table = image_list(app).table
    return sum(column.get_render_width(table) for column in table.columns.values())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_architecture_and_size_have_columns_of_their_own(
    images: Catalog, people: People, size: tuple[int, int]
) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        columns = [str(key.value) for key in image_list(app).table.columns]
        assert {"name", "id", "os", "arch", "status", "size"} <= set(columns)
        assert cell(app, "img-glbx0001", "os") == "Ubuntu 18.04"  # whole, and without the architecture
        assert cell(app, "img-glbx0001", "arch") == "aarch64"
        assert cell(app, "img-acme0006", "os") == "Ubuntu 16.04"
        assert cell(app, "img-acme0002", "size") == "40"  # GB, the virtual size
        assert cell(app, "img-acme0003", "size") == "-"  # importing: not known yet
        assert cell(app, "img-acme0004", "status") == "import failed"
        # a long list's scrollbar takes 2 cells: every column still fits, none scrolled out of sight
        assert table_width(app) <= size[0] - 2


async def test_size_column_sorts_and_arch_is_a_sort_key(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = image_list(app).table
        table.post_message(
            table.HeaderSelected(table, table.columns["arch"].key, 0, table.columns["arch"].label)  # type: ignore[arg-type]
        )
        await settle(pilot)
        assert image_list(app).image_query.sort == "arch"


def footer_keys(app: Any) -> list[str]:
    return [key.key for key in app.screen.query(FooterKey)]


async def test_footer_shows_every_key_that_fits_and_the_rest_are_under_question_mark(
    images: Catalog, people: People
) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wide = footer_keys(app)
        assert {"space", "g", "c", "x", "question_mark", "q"} <= set(wide)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        narrow = footer_keys(app)
        assert {"question_mark", "q", "slash", "i", "e", "d"} <= set(narrow)
        assert not {"g", "c", "x"} & set(narrow)  # no room at 80 columns: listed under ?
        shown = "".join(str(key.render()) for key in app.screen.query(FooterKey))
        assert cell_len(shown) + len(narrow) <= 80
        await pilot.press("question_mark")
        await settle(pilot)
        assert type(app.screen).__name__ == "HelpScreen"
        listed = {(keys, description) for keys, description, _tooltip in key_rows(app, app.screen.under)}
        assert {("g", "Download"), ("c", "Create VM"), ("x", "Export"), ("space", "Select")} <= listed


async def test_footer_in_chinese_fits_80_columns(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        keys = footer_keys(app)
        assert "question_mark" in keys and "q" in keys
        shown = "".join(str(key.render()) for key in app.screen.query(FooterKey))
        assert cell_len(shown) + len(keys) <= 80


async def test_a_refusal_names_the_status_in_people_s_words(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0004")  # import failed
        await pilot.press("g")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("is import failed; it can be downloaded only when available" in m for m in messages), messages
        assert not any("import_failed" in m for m in messages)


def test_the_tui_and_the_command_line_share_one_size_format() -> None:
    assert tui_human_size is human_size
    assert human_size(42 * 1024**2) == "42 MB" and human_size(2 * 1024**2) == "2 MB"
    assert human_size(1536 * 1024) == "1.5 MB" and human_size(20 * 1024**3) == "20 GB" and human_size(512) == "512 B"
    assert size_in_gb(40 * 1024**3) == "40" and size_in_gb(int(2.5 * 1024**3)) == "2.5" and size_in_gb(None) == "-"


async def next_ticks(image_list_widget: Any, count: int) -> None:
    """Await `count` refresh ticks of the list (its timer sets `ticked` at each)."""
    for _ in range(count):
        image_list_widget.ticked.clear()
        await asyncio.wait_for(image_list_widget.ticked.wait(), timeout=10)


async def test_an_idle_list_queries_nothing_until_the_catalog_changes(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, refresh_seconds=0.02)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        listing = image_list(app)
        await next_ticks(listing, 2)
        await settle(pilot)
        ticks, queries = listing.ticks, listing.queries
        await next_ticks(listing, 10)
        assert listing.ticks >= ticks + 10
        assert listing.queries == queries, "the list queried a catalog nothing had changed"
        # another writer commits: the next tick reads the page again and shows it
        edit_image(images, people.owner, "img-acme0001", name="web-renamed")
        await next_ticks(listing, 2)
        await settle(pilot)
        assert listing.queries > queries
        assert next(r for r in listing.rows if r["id"] == "img-acme0001")["name"] == "web-renamed"
