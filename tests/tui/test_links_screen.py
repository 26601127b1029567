"""The links screen (`l` on the image list): links made earlier are listed after closing and reopening,
revoke goes behind a confirmation (No leaves the link), core's refusals show with their reason, the
detail copies the addresses the session made (OSC 52) and says honestly why older ones cannot be shown.
The end-to-end test revokes in the TUI and a real `curl` against a real `imagehub serve` is refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable
from textual.widgets._footer import FooterKey

from core.catalog.catalog import Catalog
from core.catalog.vocabulary import LinkState
from core.links.links import create_link, get_link, list_links
from core.rules.access import Actor
from tests.conftest import People, actor
from tests.gateway.conftest import Gateway, make_catalog, start_server, stop_server
from tests.tui.conftest import add_images, make_app, move_to, settle
from tui.i18n import set_language
from tui.screens.links import STATE_WORDS


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    yield
    set_language("en")


def notes(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def table(app: Any) -> DataTable[Any]:
    return app.screen.query_one("#links-table", DataTable)


def shown_ids(app: Any) -> list[str]:
    return [str(key.value) for key in table(app).rows]


def row_of(app: Any, link_id: str) -> list[str]:
    return [str(cell).rstrip() for cell in table(app).get_row(link_id)]


def move_to_link(app: Any, link_id: str) -> None:
    table(app).move_cursor(row=shown_ids(app).index(link_id), animate=False)


async def open_links(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("l")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "LinksScreen"


def assert_readable(app: Any, width: int) -> None:
    """Every column fits without scrolling sideways, and every footer key is on screen."""
    grid = table(app)
    assert grid.virtual_size.width <= grid.scrollable_content_region.width
    keys = list(app.screen.query(FooterKey))
    assert keys and all(key.region.width > 0 and key.region.right <= width for key in keys)


def state_of(catalog: Catalog, who: Actor, link_id: str) -> str:
    return str(get_link(catalog, who, link_id)["state"])


def test_every_link_state_has_a_short_word() -> None:
    assert set(STATE_WORDS) == set(LinkState)


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_links_made_earlier_show_after_closing_and_reopening(
    images: Catalog, people: People, size: tuple[int, int], language: str
) -> None:
    app = make_app(images, people.owner, language=language)
    async with app.run_test(size=size) as pilot:
        await open_links(pilot)
        assert shown_ids(app) == []
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        made = create_link(images, people.owner, "img-acme0001").view  # e.g. from another session
        await pilot.press("l")
        await settle(pilot)
        assert shown_ids(app) == [made["id"]]
        row = " ".join(row_of(app, made["id"]))
        assert "img-acme0001" in row and made["format"].upper() in row
        assert ("download" if language == "en" else "下载") in row
        assert_readable(app, size[0])
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("l")  # closed and reopened: still there
        await settle(pilot)
        assert shown_ids(app) == [made["id"]]


async def test_revoke_asks_first_no_keeps_the_link_yes_revokes_it(images: Catalog, people: People) -> None:
    made = create_link(images, people.owner, "img-acme0001").view
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_links(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("escape")  # No
        await settle(pilot)
        assert type(app.screen).__name__ == "LinksScreen"
        assert state_of(images, people.owner, made["id"]) != LinkState.REVOKED
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert state_of(images, people.owner, made["id"]) == LinkState.REVOKED
        assert f"Revoked {made['id']}." in notes(app)
        assert "revoked" in row_of(app, made["id"])
        await pilot.press("r")  # again: nothing to confirm
        await settle(pilot)
        assert type(app.screen).__name__ == "LinksScreen"
        assert f"{made['id']} is already revoked: it no longer answers." in notes(app)


async def test_a_viewer_revoking_a_link_not_theirs_is_refused_with_cores_reason(
    images: Catalog, people: People
) -> None:
    made = create_link(images, people.owner, "img-acme0002").view
    app = make_app(images, people.viewer)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_links(pilot)
        assert shown_ids(app) == [made["id"]]  # core lets the viewer see it
        await pilot.press("r", "y")
        await settle(pilot)
        assert f"account acme-viewer may not revoke link {made['id']}" in notes(app)
        assert state_of(images, people.owner, made["id"]) != LinkState.REVOKED


async def test_other_tenants_links_are_not_listed(images: Catalog, people: People) -> None:
    create_link(images, people.admin, "img-glbx0001")
    mine = create_link(images, people.owner, "img-acme0001").view
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_links(pilot)
        assert shown_ids(app) == [mine["id"]]


async def test_detail_copies_the_addresses_made_in_this_session(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g", "ctrl+g")  # the download link screen makes the link
        await settle(pilot)
        made: Any = app.screen
        http = made.link["http"]
        await pilot.press("escape")
        await open_links(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "LinkDetailScreen"
        assert app.screen.query_one("#field-http").value == http
        assert app.screen.query_one("#field-sftp_command").value.startswith("sftp -P ")
        await pilot.press("c")  # the HTTP field has the focus
        assert app.clipboard == http
        await pilot.press("3")
        assert app.clipboard == made.link["sftp"]


async def test_detail_of_an_older_link_says_why_its_addresses_are_not_shown(images: Catalog, people: People) -> None:
    made = create_link(images, people.owner, "img-acme0001").view
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_links(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen: Any = app.screen
        assert not screen.query("#field-http")
        assert "cannot be shown again" in str(screen.query_one("#link-note").render())
        await pilot.press("c")  # the link's ID can still be copied
        assert app.clipboard == made["id"]


async def test_the_list_refreshes_while_shown(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, refresh_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_links(pilot)
        assert shown_ids(app) == []
        made = create_link(images, people.owner, "img-acme0001").view
        for _attempt in range(100):
            if shown_ids(app):
                break
            await pilot.pause(0.05)
        assert shown_ids(app) == [made["id"]]


async def test_filter_narrows_the_rows(images: Catalog, people: People) -> None:
    first = create_link(images, people.owner, "img-acme0001").view
    second = create_link(images, people.owner, "img-acme0002").view
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_links(pilot)
        assert set(shown_ids(app)) == {first["id"], second["id"]}
        await pilot.press("slash", *"acme0002", "enter")
        await settle(pilot)
        assert shown_ids(app) == [second["id"]]
        await pilot.press("escape")
        await settle(pilot)
        assert set(shown_ids(app)) == {first["id"], second["id"]}


# ---- end to end: a real gateway and curl ----------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    root = Path(tempfile.mkdtemp(prefix="imagehub-links-"))
    config, catalog = make_catalog(root)
    add_images(catalog)
    proc, (host, http, ftp, sftp) = start_server(config, root, root / "serve.log")
    try:
        yield Gateway(root, config, catalog, proc, host, http, ftp, sftp, root / "serve.log")
    finally:
        code = stop_server(proc)
        catalog.dispose()
        shutil.rmtree(root, ignore_errors=True)
        assert code == 0


def http_code(url: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_a_link_made_closed_reopened_revoked_and_then_refused_by_curl(gateway: Gateway) -> None:
    catalog = gateway.catalog
    owner = actor(catalog, "acme-owner")
    app = make_app(catalog, owner, embedded_worker=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g", "ctrl+g")
        await settle(pilot)
        screen: Any = app.screen
        link_id = screen.link["id"]
        for _attempt in range(300):  # the embedded worker computes the checksum
            if screen.link["state"] == LinkState.ACTIVE:
                break
            await pilot.pause(0.1)
        assert screen.link["state"] == LinkState.ACTIVE
        await pilot.press("escape")
        await open_links(pilot)
        await pilot.press("escape")  # the links screen closed ...
        await settle(pilot)
        await open_links(pilot)  # ... and opened again
        assert shown_ids(app) == [link_id]
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("1")
        url = app.clipboard
        assert url.startswith(f"http://127.0.0.1:{gateway.http}/d/")
        assert http_code(url) == "200"
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("y")
        await settle(pilot)
        assert "revoked" in row_of(app, link_id)
    assert [link["state"] for link in list_links(catalog, owner)] == [LinkState.REVOKED]
    assert http_code(url) == "403"


async def test_detail_copies_the_addresses_of_a_workbook_made_in_this_session(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("x")  # the workbook link screen makes the link
        await settle(pilot)
        made: Any = app.screen
        assert type(made).__name__ == "WorkbookLinkScreen"
        view = dict(made.link)
        await pilot.press("escape")
        await open_links(pilot)
        move_to_link(app, view["id"])
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "LinkDetailScreen"
        assert app.screen.query_one("#field-http").value == view["http"]
        await pilot.press("c")
        assert app.clipboard == view["http"]
