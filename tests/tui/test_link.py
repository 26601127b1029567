"""Download links from the TUI: format choice, the three URLs and the sftp command, expiry, SHA-256, copy."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from textual.widgets import Select, Static

from core.catalog.catalog import Catalog
from core.disk import qemu
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle
from tui.widgets.format import human_size


async def test_generate_links_shows_urls_expiry_and_checksum_and_copies(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, embedded_worker=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g")
        await settle(pilot)
        assert type(app.screen).__name__ == "LinkScreen"
        assert app.screen.query_one("#format", Select).value == "qcow2"  # links.default_format
        app.screen.query_one("#format", Select).value = "raw"
        await settle(pilot)
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


def _sparse_stored_file(catalog: Catalog, image_id: str, data: int, size: int) -> None:
    """Make the image's stored raw file `size` bytes of which only the first `data` are written."""
    path = catalog.store.image_path(image_id, "raw")
    with path.open("wb") as handle:
        handle.write(os.urandom(data))
        handle.truncate(size)


async def test_the_link_screen_shows_both_sizes_before_generating(images: Catalog, people: People) -> None:
    _sparse_stored_file(images, "img-acme0001", 64 << 20, 20 << 30)  # 64 MiB of data on a 20 GiB disk
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g")
        await settle(pilot)
        screen: Any = app.screen
        assert screen.link is None and screen.query_one("#format", Select).value == "qcow2"
        lines = str(screen.query_one("#sizes", Static).render()).splitlines()
        # qcow2: about what qemu-img says the export will be (the data and qcow2's tables)
        stored = images.store.image_path("img-acme0001", "raw")
        data, disk = human_size(qemu.measure(stored, "raw", "qcow2")), human_size(20 << 30)
        assert 64 << 20 <= qemu.measure(stored, "raw", "qcow2") <= 72 << 20
        assert lines == [
            f"▸ QCOW2 · about {data} to download (virtual disk {disk})",
            f"  RAW · {disk} to download (mostly zeros)",
        ]
        screen.query_one("#format", Select).value = "raw"
        await settle(pilot)
        assert str(screen.query_one("#sizes", Static).render()).splitlines()[1].startswith(f"▸ RAW · {disk} ")


async def test_the_configured_default_format_is_offered_first(images: Catalog, people: People) -> None:
    images.settings.links.default_format = "raw"
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g")
        await settle(pilot)
        screen: Any = app.screen
        assert screen.query_one("#format", Select).value == "raw"
        first = str(screen.query_one("#sizes", Static).render()).splitlines()[0]
        assert first == f"▸ RAW · 需下载 {human_size(512)}"  # the fixture's stored file: 512 bytes


async def test_an_iso_is_offered_only_as_it_is(images: Catalog, people: People) -> None:
    from core.catalog import db
    from core.catalog.models import Image

    with db.write_session(images.engine) as session:
        image = session.get(Image, "img-acme0001")
        assert image is not None
        image.disk_format = "iso"
        session.add(image)
    stored = images.store.image_path("img-acme0001", "raw")
    stored.rename(images.store.image_path("img-acme0001", "iso"))
    app = make_app(images, people.owner, embedded_worker=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("g")
        await settle(pilot)
        screen: Any = app.screen
        assert screen.query_one("#format", Select).value == "iso"
        assert str(screen.query_one("#sizes", Static).render()) == f"▸ ISO · {human_size(512)} to download"
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert screen.link is not None and screen.link["format"] == "iso"
        assert screen.query_one("#field-http").value.endswith("/img-acme0001.iso")
