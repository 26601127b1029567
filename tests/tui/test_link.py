"""Download links from the TUI: format choice, the three URLs and the sftp command, expiry, SHA-256, copy."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from textual.widgets import Select, Static

from core.catalog.catalog import Catalog
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle


async def test_generate_links_shows_urls_expiry_and_checksum_and_copies(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, embedded_worker=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g")
        await settle(pilot)
        assert type(app.screen).__name__ == "LinkScreen"
        assert app.screen.query_one("#format", Select).value == "raw"
        await pilot.press("ctrl+g")
        await settle(pilot)
        screen: Any = app.screen
        assert screen.link is not None
        http = screen.query_one("#field-http").value
        assert http.startswith("http://") and "/d/" in http and http.endswith("/img-acme0001.raw")
        assert screen.query_one("#field-ftp").value.startswith("ftp://")
        assert screen.query_one("#field-sftp").value.startswith("sftp://")
        assert screen.query_one("#field-sftp_command").value.startswith("sftp -P ")
        assert screen.link["expires_at"] in screen.query_one("#field-expires_at").value
        deadline = time.monotonic() + 30
        while screen.query_one("#field-sha256").value == "" and time.monotonic() < deadline:
            await pilot.pause(0.2)
        expected = hashlib.sha256(images.store.image_path("img-acme0001", "raw").read_bytes()).hexdigest()
        assert screen.query_one("#field-sha256").value == expected
        assert "ready" in str(screen.query_one("#link-state", Static).render())
        await pilot.press("1")
        assert app.clipboard == http
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_link_for_an_importing_image_is_refused_with_core_message(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0003")
        await pilot.press("g")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert "image img-acme0003 is importing; it can be downloaded only when available" in messages
        assert type(app.screen).__name__ == "ImagesScreen"
