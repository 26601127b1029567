"""Pilot tests of the TUI flows: list, filter, tabs, delete, recycle bin, edit, guide, errors, zh_CN."""

from __future__ import annotations

from typing import Any

import openpyxl
import pytest
from textual.widgets import Button, Input, Static

from core.catalog.catalog import Catalog
from core.links import links
from tests.conftest import People
from tests.tui.conftest import image_list, make_app, move_to, settle, shown_ids, status_of
from tui.i18n import set_language


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


async def test_list_shows_visible_images_newest_first_with_tenant_and_account(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert shown_ids(app) == [
            "img-acme0006",
            "img-acme0005",
            "img-acme0004",
            "img-acme0003",
            "img-acme0002",
            "img-acme0001",
        ]
        assert "acme" in app.screen.sub_title and "acme-owner" in app.screen.sub_title
        status = str(app.screen.query_one("#list-status", Static).render())
        assert "1–6 of 6" in status


async def test_admin_sees_every_tenant_and_can_switch(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "img-glbx0001" in shown_ids(app)
        await pilot.press("t")
        await settle(pilot)
        assert type(app.screen).__name__ == "ChooseScreen"
        await pilot.press("down", "down", "enter")  # All tenants, acme, globex
        await settle(pilot)
        assert shown_ids(app) == ["img-glbx0001"]
        assert "globex" in app.screen.sub_title


async def test_filter_narrows_as_you_type_and_escape_clears(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", "w", "i")
        await settle(pilot)
        assert shown_ids(app) == ["img-acme0003"]  # win-iis (win-2008 is in the bin)
        await pilot.press("backspace", "backspace", "i", "m", "g", "-", "a", "c", "m", "e", "0", "0", "0", "1")
        await settle(pilot)
        assert shown_ids(app) == ["img-acme0001"]  # ID prefix
        await pilot.press("escape")
        await settle(pilot)
        assert len(shown_ids(app)) == 6


async def test_status_tab_shows_one_status(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("tab")  # next status tab: available
        await settle(pilot)
        assert {row["status"] for row in image_list(app).rows} == {"available"}
        assert len(shown_ids(app)) == 3


async def test_sort_cycles_columns_and_reverses(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")  # by name, ascending
        await settle(pilot)
        names = [row["name"] for row in image_list(app).rows]
        assert names == sorted(names)
        await pilot.press("S")
        await settle(pilot)
        assert [row["name"] for row in image_list(app).rows] == sorted(names, reverse=True)


async def test_importing_image_shows_progress(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0003")
        await pilot.pause()
        detail = str(app.screen.query_one("#list-detail", Static).render())
        assert "42%" in detail and "download" in detail and "2 MB/s" in detail and "left" in detail


async def test_batch_delete_reports_each_image_and_one_refusal_does_not_stop_the_others(
    images: Catalog, people: People
) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for image_id in ("img-acme0001", "img-acme0003", "img-acme0004"):
            move_to(app, image_id)
            await pilot.press("space")
        assert set(image_list(app).selected) == {"img-acme0001", "img-acme0003", "img-acme0004"}
        await pilot.press("d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        listed = str(app.screen.query_one(".dialog-list Static", Static).render())
        assert "web-frontend" in listed and "win-iis" in listed and "broken-upload" in listed
        await pilot.click("#yes")
        await settle(pilot)
        assert type(app.screen).__name__ == "ResultsScreen"
        results = str(app.screen.query_one("#results Static", Static).render())
        assert "✓ img-acme0001" in results and "✓ img-acme0004" in results
        assert "✗ img-acme0003" in results and "importing" in results
        assert status_of(images, "img-acme0001") == "deleted"
        assert status_of(images, "img-acme0004") == "deleted"
        assert status_of(images, "img-acme0003") == "importing"
        await pilot.press("enter")
        await settle(pilot)
        assert "img-acme0001" not in shown_ids(app)
        assert set(image_list(app).selected) == {"img-acme0003"}


async def test_delete_confirmation_defaults_to_no(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("d")
        await settle(pilot)
        assert app.screen.focused is app.screen.query_one("#no", Button)
        await pilot.press("enter")
        await settle(pilot)
        assert status_of(images, "img-acme0001") == "available"


async def test_viewer_is_refused_with_a_message(images: Catalog, people: People) -> None:
    app = make_app(images, people.viewer)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        results = str(app.screen.query_one("#results Static", Static).render())
        assert "may view but not change" in results
        assert status_of(images, "img-acme0001") == "available"


async def test_restore_and_destroy_from_the_recycle_bin(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert type(app.screen).__name__ == "RecycleBinScreen"
        assert sorted(shown_ids(app)) == ["img-acme0007", "img-acme0008"]
        move_to(app, "img-acme0007")
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert status_of(images, "img-acme0007") == "available"
        await pilot.press("enter")  # close the results
        await settle(pilot)
        assert shown_ids(app) == ["img-acme0008"]
        await pilot.press("D")
        await settle(pilot)
        assert app.screen.query_one("#yes", Button).disabled
        await pilot.press(*"win-200")
        assert app.screen.query_one("#yes", Button).disabled
        await pilot.press("8", "enter")
        await settle(pilot)
        assert status_of(images, "img-acme0008") is None
        assert not images.store.image_path("img-acme0008", "raw").exists()
        await pilot.press("enter", "escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        assert "img-acme0007" in shown_ids(app)


async def test_edit_an_importing_image(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0003")
        await pilot.press("e")
        await settle(pilot)
        name = app.screen.query_one("#name", Input)
        name.value = ""
        await pilot.pause()
        assert "name is required" in str(app.screen.query_one("#name-message", Static).render())
        assert app.screen.query_one("#save", Button).disabled
        name.value = "win-iis-renamed"
        app.screen.query_one("#description", Input).value = "备注 changed"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        row = next(r for r in image_list(app).rows if r["id"] == "img-acme0003")
        assert row["name"] == "win-iis-renamed" and row["description"] == "备注 changed"
        assert row["status"] == "importing"


async def test_guide_opens_with_conversion_steps(images: Catalog, people: People) -> None:
    from textual.widgets import Markdown

    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        assert type(app.screen).__name__ == "GuideScreen"
        markdown = app.screen.query_one(Markdown)
        assert "qemu-img convert" in markdown.source and "cloudbase-init" in markdown.source
        await pilot.press("escape")
        await pilot.press("f1")
        await settle(pilot)
        assert type(app.screen).__name__ == "GuideScreen"


async def test_keys_screen_and_command_palette_list_the_actions(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for title in ("Import", "Edit", "Delete", "Bin", "Export", "Download", "Create VM", "Guide", "Quit"):
            assert title in titles


async def test_unexpected_error_becomes_a_notification_and_a_log_entry(
    images: Catalog, people: People, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tui.widgets import image_list as image_list_module

    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(image_list_module, "list_images", boom)
        await pilot.press("ctrl+r")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("disk on fire" in m for m in messages)
        assert "disk on fire" in caplog.text
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_chinese_interface(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tabs = [str(tab.label) for tab in app.screen.query("Tab")]
        assert "可用" in tabs and "导入中" in tabs
        descriptions = {b.description for _k, b in app.screen._bindings}
        assert "删除" in descriptions and "回收站" in descriptions
        assert "租户" in app.screen.sub_title
        row = next(r for r in image_list(app).rows if r["id"] == "img-acme0006")
        assert row["name"] == "数据库镜像"
        await pilot.press("x")  # the workbook behind a link (checklist L6)
        await settle(pilot)
        screen: Any = app.screen
        assert type(screen).__name__ == "WorkbookLinkScreen" and "24" in str(screen.query_one("#link-hint").render())
        target = links.validate_token(images, screen.link["http"].split("/d/")[1].split("/")[0]).path
    rows = list(openpyxl.load_workbook(target).active.iter_rows(values_only=True))
    assert rows[0][0] == "名称" and "可用" in {r[4] for r in rows[1:]}


async def test_pages_through_a_large_list(catalog: Catalog, people: People) -> None:
    from tests.tui.conftest import add_images

    rows = [
        (f"img-page{i:04d}", f"bulk-{i:04d}", "acme", "Linux", "CentOS", "7.9", "x86_64", "available", 20, "", None)
        for i in range(250)
    ]
    add_images(catalog, rows)
    app = make_app(catalog, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert len(shown_ids(app)) == 100
        assert "1–100 of 250" in str(app.screen.query_one("#list-status", Static).render())
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert "101–200 of 250" in str(app.screen.query_one("#list-status", Static).render())
        await pilot.press("end")
        image_list(app).table.move_cursor(row=99)
        await pilot.press("down")
        await settle(pilot)
        assert shown_ids(app)[0] == "img-page0049"
        assert len(shown_ids(app)) == 50
        await pilot.press("up")
        await settle(pilot)
        assert "101–200" in str(app.screen.query_one("#list-status", Static).render())


async def test_guide_in_chinese(images: Catalog, people: People) -> None:
    from textual.widgets import Markdown

    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)
        source = app.screen.query_one(Markdown).source
        assert source.startswith("# 自定义镜像指南") and "qemu-img convert" in source


async def test_clicking_a_column_header_sorts_by_it(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = image_list(app).table
        table.post_message(
            table.HeaderSelected(table, table.columns["name"].key, 0, table.columns["name"].label)  # type: ignore[arg-type]
        )
        await settle(pilot)
        names = [row["name"] for row in image_list(app).rows]
        assert image_list(app).image_query.sort == "name" and names == sorted(names)


async def test_edit_a_deleted_image_in_the_recycle_bin(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        move_to(app, "img-acme0007")
        await pilot.press("e")
        await settle(pilot)
        app.screen.query_one("#name", Input).value = "old-test-2"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "RecycleBinScreen"
        assert next(r for r in image_list(app).rows if r["id"] == "img-acme0007")["name"] == "old-test-2"


async def test_q_in_a_dialog_closes_the_dialog_not_the_app(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0001")
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("q")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen" and app.is_running
        assert status_of(images, "img-acme0001") == "available"
