"""The VMs screen: the list with the driver's words, start/stop/delete with core's refusals shown, and
the serial console followed as the guest prints (a real qemu guest when qemu-system is installed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Log
from textual.widgets._footer import FooterKey

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.compute.vms import create_vm, list_vms
from core.images.images import list_images
from tests.conftest import People
from tests.tui.conftest import make_app, settle
from tests.vmdata import SERIAL_GREETING, make_greeting_image
from tui.i18n import set_language
from tui.screens.console import ConsoleText

PASSWORD = "Passw0rd!x"


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    """The language is process-wide: leave English for the next test."""
    yield
    set_language("en")


def notes(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def shown_rows(app: Any) -> list[list[str]]:
    table = app.screen.query_one("#vms-table", DataTable)
    return [[str(cell).rstrip() for cell in table.get_row_at(row)] for row in range(table.row_count)]


def assert_readable(app: Any, width: int) -> None:
    """Every column fits without scrolling sideways, and every footer key is on screen."""
    table = app.screen.query_one("#vms-table", DataTable)
    assert table.virtual_size.width <= table.scrollable_content_region.width
    keys = list(app.screen.query(FooterKey))
    assert keys and all(key.region.width > 0 and key.region.right <= width for key in keys)


async def until(pilot: Any, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Let the app run until `condition` holds (the guest prints in its own time), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


async def open_vms(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("m")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "VmsScreen"


async def test_the_list_shows_defined_vms_and_fits_80x24(images: Catalog, people: People) -> None:
    first = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    second = create_vm(images, people.owner, "img-acme0002", "db01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_vms(pilot)
        assert shown_rows(app) == [
            ["db01", second["id"], "img-acme0002", "defined (no compute driver)"],
            ["app01", first["id"], "img-acme0001", "defined (no compute driver)"],
        ]
        assert_readable(app, 80)
        footer = {str(key.description) for key in app.screen.query(FooterKey)}
        assert {"Start", "Stop", "Delete", "Console", "Back"} <= footer
        await pilot.press("escape")
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_wide_list_shows_driver_and_created(images: Catalog, people: People) -> None:
    vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(130, 30)) as pilot:
        await open_vms(pilot)
        [row] = shown_rows(app)
        assert row[:5] == ["app01", vm["id"], "img-acme0001", "defined (no compute driver)", "none"]
        assert row[5] == vm["created_at"][:16].replace("T", " ")
        assert_readable(app, 130)


async def test_in_chinese_the_status_is_translated(images: Catalog, people: People) -> None:
    create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_vms(pilot)
        assert shown_rows(app)[0][3] == "仅定义（无计算驱动）"
        assert_readable(app, 80)


async def test_start_stop_and_console_of_a_defined_vm_show_the_refusal(images: Catalog, people: People) -> None:
    vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        undriven = f"vm {vm['id']} is only defined: no compute driver runs it"
        await pilot.press("s")
        await settle(pilot)
        assert any(undriven in note for note in notes(app))
        app.clear_notifications()
        await pilot.press("o")
        await settle(pilot)
        assert any(undriven in note for note in notes(app))
        for key in ("c", "enter"):
            app.clear_notifications()
            await pilot.press(key)
            await settle(pilot)
            assert type(app.screen).__name__ == "VmsScreen"
            assert f"vm {vm['id']} is only defined: it has never run, so it has no console" in notes(app)
        assert shown_rows(app)[0][3] == "defined (no compute driver)"


async def test_delete_behind_a_confirmation(images: Catalog, people: People) -> None:
    create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("n")
        await settle(pilot)
        assert len(list_vms(images, people.owner)) == 1
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert list_vms(images, people.owner) == []
        assert shown_rows(app) == []
        assert "Deleted VM app01." in notes(app)


def test_console_text_drops_escape_sequences_and_keeps_split_characters() -> None:
    text = ConsoleText()
    pieces = [
        b"\x1b[31mred\x1b[0m plain\r\n",
        b"bell\x07 \x1b]0;title\x07ok\r\n",
        b"\xe4\xb8",
        b"\xad \x1b[",
        b"1mB\r\n",
    ]
    out = "".join(text.feed(piece) for piece in pieces)
    assert out == "red plain\nbell\\x07 ok\n中 B\n"
    assert text.feed(b"\xff\n") == "\ufffd\n"


async def test_console_follows_a_running_guest_then_stop_from_the_list(qemu_catalog: Catalog, people: People) -> None:
    catalog = qemu_catalog
    vm = create_vm(catalog, people.owner, make_greeting_image(catalog, people.owner), "hello", PASSWORD)
    greeting = SERIAL_GREETING.decode().strip()
    app = make_app(catalog, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        assert shown_rows(app)[0][:4] == ["hello", vm["id"], vm["image_id"], "running"]
        await pilot.press("c")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConsoleScreen"
        log = app.screen.query_one(Log)
        await until(pilot, lambda: greeting in log.lines, "the greeting in the console")
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("o")
        await pilot.pause()
        assert shown_rows(app)[0][3] == "stopping…"  # the guest ignores ACPI: a second's wait, said
        await settle(pilot)
        assert "hello is stopped." in notes(app)
        assert shown_rows(app)[0][3] == "stopped"
        assert list_vms(catalog, people.owner)[0]["status"] == "stopped"


async def test_the_images_footer_offers_the_vms_screen_at_80x24(images: Catalog, people: People) -> None:
    for language, label in (("en", "VMs"), ("zh_CN", "虚拟机")):
        app = make_app(images, people.owner, language=language)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            keys = list(app.screen.query(FooterKey))
            assert label in [str(key.description) for key in keys]
            assert all(key.region.width > 0 and key.region.right <= 80 for key in keys), language


async def test_the_list_is_live(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, refresh_seconds=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_vms(pilot)
        assert shown_rows(app) == []
        vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)  # by someone else, say
        await until(pilot, lambda: bool(shown_rows(app)), "the new VM in the list", timeout=10)
        assert shown_rows(app)[0][:2] == ["app01", vm["id"]]


async def test_new_vm_from_the_vms_screen_picks_an_available_image(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        assert "create one with n" in str(app.screen.query_one("#vms-status").render())
        await pilot.press("n")
        await settle(pilot)
        assert type(app.screen).__name__ == "ChooseScreen"
        offered = [option.id for option in app.screen.query_one("OptionList")._options]  # type: ignore[attr-defined]
        available = [i["id"] for i in list_images(images, people.owner) if i["status"] == Status.AVAILABLE]
        assert offered and sorted(offered) == sorted(available)
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmCreateScreen"
        chosen = app.screen.image["id"]  # type: ignore[attr-defined]
        for field, value in (("#vm-name", "web01"), ("#password", PASSWORD), ("#password2", PASSWORD)):
            app.screen.query_one(field, Input).value = value
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmsScreen"
        vms = list_vms(images, people.owner)
        assert [(vm["name"], vm["image_id"]) for vm in vms] == [("web01", chosen)]
        assert shown_rows(app)[0][0] == "web01"
        assert f"Created VM web01 ({vms[0]['id']})." in notes(app)


async def test_new_vm_with_no_available_image_says_so(catalog: Catalog, people: People) -> None:
    app = make_app(catalog, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmsScreen"
        assert "No available image to create a VM from." in notes(app)


async def test_capture_a_vm_into_an_image_then_a_second_capture_is_refused(images: Catalog, people: People) -> None:
    vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_vms(pilot)
        await pilot.press("i")
        await settle(pilot)
        assert type(app.screen).__name__ == "CaptureScreen"
        name_box = app.screen.query_one("#capture-name", Input)
        assert name_box.value == "app01-capture"
        name_box.value = ""
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "CaptureScreen"  # an empty name is refused in place
        assert str(app.screen.query_one("#capture-name-message").render()).strip()
        await pilot.press(*"golden-app01", "ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmsScreen"
        made = [i for i in list_images(images, people.owner) if i["name"] == "golden-app01"]
        assert len(made) == 1 and made[0]["status"] == Status.CREATING
        assert any(f"into image golden-app01 ({made[0]['id']})" in note for note in notes(app))
        app.clear_notifications()
        await pilot.press("i")
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "CaptureScreen"
        assert any(f"vm {vm['id']} is already being captured into {made[0]['id']}" in n for n in notes(app))
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "VmsScreen"
        assert len([i for i in list_images(images, people.owner) if i["name"].startswith("golden")]) == 1
