"""Create a VM from the TUI: image preselected, core's password rules as you type, then the image
cannot be deleted while the VM exists."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, Static

from core.catalog.catalog import Catalog
from core.compute.vms import list_vms
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle, status_of


def message(app: Any, field: str) -> str:
    return str(app.screen.query_one(f"#{field}-message", Static).render())


async def test_create_vm_from_image_then_delete_is_refused(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("c")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmCreateScreen"
        assert "web-frontend" in str(app.screen.query_one("#vm-image", Static).render())
        app.screen.query_one("#vm-name", Input).value = "app01"
        app.screen.query_one("#password", Input).value = "short"
        await pilot.pause()
        assert "password is too short" in message(app, "password")
        app.screen.query_one("#password", Input).value = "Str0ng-Passw0rd"
        app.screen.query_one("#password2", Input).value = "Str0ng-Passw0rX"
        await pilot.pause()
        assert message(app, "password") == ""
        assert message(app, "password2") == "the two passwords differ"
        assert "strong" in str(app.screen.query_one("#strength", Static).render())
        app.screen.query_one("#password2", Input).value = "Str0ng-Passw0rd"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        vms = list_vms(images, people.owner)
        assert [(v["name"], v["image_id"]) for v in vms] == [("app01", "img-acme0001")]
        await pilot.press("d", "y")
        await settle(pilot)
        results = str(app.screen.query_one("#results Static", Static).render())
        assert "used by" in results and vms[0]["id"] in results
        assert status_of(images, "img-acme0001") == "available"
