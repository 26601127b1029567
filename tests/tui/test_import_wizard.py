"""The import wizard: validation as you type with core's messages, cascading OS choices, and an
import of a local qcow2 made by qemu-img that ends `available` through the TUI's embedded worker."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select, Static

from core.catalog.catalog import Catalog
from tests.conftest import People
from tests.importkit import make_disk
from tests.tui.conftest import image_list, make_app, settle, status_of


def message(app: Any, field: str) -> str:
    return str(app.screen.query_one(f"#message-{field}", Static).render())


async def open_wizard(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("i")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "ImportWizard"


async def choose(pilot: Any, field: str, value: str) -> None:
    pilot.app.screen.query_one(f"#{field}", Select).value = value
    await pilot.pause()


async def test_wizard_checks_fields_as_you_type_with_core_messages(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_wizard(pilot)
        screen = app.screen
        screen.query_one("#name", Input).value = "x" * 65
        await pilot.pause()
        assert message(app, "name") == "name is 65 characters long; at most 64 are allowed"
        screen.query_one("#size", Input).value = "10"
        await pilot.pause()
        assert message(app, "size") == "size (GB) 10 is out of range; choose 20 to 500 GB"
        screen.query_one("#sha256", Input).value = "abc"
        await pilot.pause()
        assert message(app, "sha256") == "sha256 must be 64 hexadecimal digits"
        await choose(pilot, "source", "url")
        screen.query_one("#url", Input).value = "gopher://example.com/x.img"
        await pilot.pause()
        assert "gopher" in message(app, "url")
        # cascading choices from the OS matrix
        await choose(pilot, "os_type", "Windows")
        assert screen.query_one("#platform", Select).value == "Windows"
        assert screen.query_one("#arch", Select).value == "x86_64"
        versions = [str(o[1]) for o in screen.query_one("#os_version", Select)._options if o[1] is not Select.NULL]
        assert versions == ["2008", "2008R2", "2012", "2012R2", "2016"]
        await choose(pilot, "os_type", "Linux")
        assert screen.query_one("#platform", Select).value is Select.NULL
        await choose(pilot, "platform", "CentOS")
        await choose(pilot, "arch", "aarch64")
        versions = [str(o[1]) for o in screen.query_one("#os_version", Select)._options if o[1] is not Select.NULL]
        assert versions == ["7.6", "7.7", "7.8", "7.9"]
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImportWizard"
        assert message(app, "os").startswith("OS version is required")
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
async def test_wizard_imports_a_local_qcow2_to_available(
    images: Catalog, people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = Path(images.settings.tui.import_root)
    incoming.mkdir(parents=True, exist_ok=True)
    source = make_disk(incoming, "qcow2", pattern=False)  # with an MBR: an import requires a disk structure
    app = make_app(images, people.owner)  # the worker starts once the list shows `importing`
    async with app.run_test(size=(120, 40)) as pilot:
        await open_wizard(pilot)
        screen = app.screen
        screen.query_one("#name", Input).value = "from-tui"
        screen.query_one("#description", Input).value = "导入测试"
        screen.query_one("#file", Input).value = str(source)
        await choose(pilot, "os_type", "Linux")
        await choose(pilot, "platform", "CentOS")
        await choose(pilot, "arch", "x86_64")
        await choose(pilot, "os_version", "7.9")
        screen.query_one("#size", Input).value = "20"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        row = next(r for r in image_list(app).rows if r["name"] == "from-tui")
        assert row["status"] == "importing"
        app.start_worker()
        deadline = time.monotonic() + 60
        while status_of(images, row["id"]) == "importing" and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert status_of(images, row["id"]) == "available"
        image_list(app).reload()
        await settle(pilot)
        assert next(r for r in image_list(app).rows if r["id"] == row["id"])["status"] == "available"
    assert app.worker is not None and app.worker.stop.is_set()


async def test_admin_chooses_the_tenant_in_the_wizard(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_wizard(pilot)
        tenant = app.screen.query_one("#tenant", Select)
        options = [str(o[1]) for o in tenant._options if o[1] is not Select.NULL]
        assert options == ["acme", "globex"]
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert message(app, "tenant") == "choose the tenant the image belongs to"


async def test_wizard_refuses_a_file_outside_the_import_folder(images: Catalog, people: People) -> None:
    outside = images.secret_path  # the signing secret must never be importable
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_wizard(pilot)
        app.screen.query_one("#file", Input).value = str(outside)
        await pilot.pause()
        assert "is not in an import folder" in message(app, "file")
