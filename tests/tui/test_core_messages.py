"""What core says reaches the TUI in the user's language: refusals, validation messages and stored
failure reasons by their template and parameters (never by reading the English text back); English
stays byte for byte what the CLI prints, and a reason stored without its template shows in English."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed, ImagehubError, Msg, NotFound
from core.catalog.models import Image, Status
from core.catalog.stored_errors import detail_of, stored_reason
from core.rules import lifecycle, validation
from core.rules.lifecycle import Operation
from tests.conftest import People
from tests.importkit import HttpBehaviour, http_server, import_and_wait, port_of
from tests.tui.conftest import add_images, make_app, move_to, settle
from tui.i18n import set_language, tr

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


def refusal(call: Any, *args: Any) -> ImagehubError:
    with pytest.raises(ImagehubError) as caught:
        call(*args)
    return caught.value


def test_english_is_exactly_what_the_cli_prints() -> None:
    set_language("en")
    too_long = refusal(validation.check_name, "x" * 65)
    assert str(too_long) == "name is 65 characters long; at most 64 are allowed" == tr(too_long)
    busy = refusal(lifecycle.require, "img-1", "importing", Operation.DELETE)
    assert tr(busy) == str(busy) == ("image img-1 is importing; it can be deleted only when available or import failed")
    nested = NotFound("{what} not found", what=Msg("image {image_id}", image_id="img-9"))
    assert tr(nested) == str(nested) == "image img-9 not found"
    assert tr("HTTP 404 from source") == "HTTP 404 from source"


def test_chinese_refusals_translate_template_status_words_and_nested_messages() -> None:
    set_language("zh_CN")
    too_long = tr(refusal(validation.check_name, "x" * 65))
    assert CJK.search(too_long) and "65" in too_long and "64" in too_long and "characters" not in too_long
    busy = tr(refusal(lifecycle.require, "img-1", "importing", Operation.DELETE))
    assert "img-1" in busy and "导入中" in busy and "可用" in busy and "导入失败" in busy and " or " not in busy
    nested = tr(NotFound("{what} not found", what=Msg("image {image_id}", image_id="img-9")))
    assert "img-9" in nested and "not found" not in nested and "image" not in nested
    size = tr(refusal(validation.check_size_gb, "10", 20, 500))
    assert CJK.search(size) and "10" in size and "20" in size and "500" in size


def test_a_stored_reason_is_translated_from_its_template_nested_ones_too() -> None:
    policy = Failed(
        "source refused by the network policy: {host} is not an allowed destination "
        "(private, loopback, link-local and metadata addresses are refused)",
        host="10.1.2.3",
    )
    nested = Failed(
        "vm {vm_id} could not be started, so it was not created: {exc}",
        vm_id="vm-7",
        exc=Failed("source unreachable: connection refused"),
    )
    stored = {str(e): stored_reason(str(e), detail_of(e)) for e in (policy, nested)}
    set_language("en")
    assert all(tr(reason) == text for text, reason in stored.items())  # English: the stored text as it is
    set_language("zh_CN")
    shown = tr(stored[str(policy)])
    assert "10.1.2.3" in shown and CJK.search(shown) and "destination" not in shown
    shown = tr(stored[str(nested)])
    assert "vm-7" in shown and "could not be started" not in shown and "connection refused" not in shown


def test_a_reason_stored_without_its_template_is_shown_in_english() -> None:
    set_language("zh_CN")
    old = "source unreachable: host name mirror.example not found"  # a row from before error_detail
    assert stored_reason(old, None) == old and tr(stored_reason(old, None)) == old
    assert tr("HTTP 404") == "HTTP 404"
    assert tr("") == ""


def test_a_template_without_translation_is_shown_in_english() -> None:
    set_language("zh_CN")
    assert tr(Msg("a template nobody translated: {x}", x=1)) == "a template nobody translated: 1"


@pytest.mark.parametrize("status", [s.value for s in Status])
def test_every_status_word_in_a_message_is_translated(status: str) -> None:
    set_language("zh_CN")
    assert CJK.search(tr(Msg(status)))


async def test_chinese_app_shows_core_validation_messages_in_chinese(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#name", Input).value = "x" * 65
        await pilot.pause()
        name = str(screen.query_one("#message-name", Static).render())
        assert CJK.search(name) and "65" in name and "characters" not in name
        screen.query_one("#size", Input).value = "10"
        await pilot.pause()
        size = str(screen.query_one("#message-size", Static).render())
        assert CJK.search(size) and "out of range" not in size


async def test_chinese_app_shows_a_refused_delete_and_a_stored_reason_in_chinese(
    images: Catalog, people: People
) -> None:
    reason = Failed("source unreachable: host name {host} not found", host="mirror.example").message
    with db.write_session(images.engine) as session:
        failed = session.get(Image, "img-acme0004")
        assert failed is not None
        failed.error, failed.error_detail = str(reason), detail_of(reason)
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0004")
        await settle(pilot)
        detail = str(app.screen.query_one("#list-detail", Static).render())
        assert "mirror.example" in detail and "not found" not in detail and "unreachable" not in detail
        move_to(app, "img-acme0003")  # importing: its job reports Phase.DOWNLOADING
        await settle(pilot)
        detail = str(app.screen.query_one("#list-detail", Static).render())
        assert "下载中 · 42%" in detail and "downloading" not in detail
        for image_id in ("img-acme0001", "img-acme0003"):
            move_to(app, image_id)
            await pilot.press("space")
        await pilot.press("d")
        await settle(pilot)
        await pilot.click("#yes")
        await settle(pilot)
        results = str(app.screen.query_one("#results Static", Static).render())
        assert "✓ img-acme0001" in results and "✗ img-acme0003" in results
        refused = next(line for line in results.splitlines() if "img-acme0003" in line)
        assert "导入中" in refused and "可用" in refused and "deleted only when" not in refused


async def test_import_failures_stored_by_the_worker_show_in_chinese_and_an_old_row_in_english(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    """Real imports fail (a note that is no disk; an HTTP 404): the TUI shows each reason from the
    template and parameters the worker stored. A row stored before templates were kept (NULL
    error_detail) shows its English text."""
    add_images(catalog)  # img-acme0004 failed long ago: error "HTTP 404", no detail
    note = tmp_path / "ubuntu-22.04.qcow2"
    note.write_bytes((b"remember to download the real image tomorrow\n" * 40)[:1024])
    not_a_disk = import_and_wait(catalog, people.owner, file=str(note))
    with http_server(HttpBehaviour()) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        missing = import_and_wait(catalog, people.owner, url=f"{base}/gone.qcow2")
    assert not_a_disk.error == "not a disk image: no partition table, file system or boot sector found"
    assert missing.error == "HTTP 404 from source"
    assert missing.error_detail is not None and "HTTP {status} from source" in missing.error_detail
    app = make_app(catalog, people.owner, language="zh_CN")
    async with app.run_test(size=(150, 45)) as pilot:
        await settle(pilot)
        shown = {}
        for image_id in (not_a_disk.id, missing.id, "img-acme0004"):
            move_to(app, image_id)
            await settle(pilot)
            shown[image_id] = str(app.screen.query_one("#list-detail", Static).render())
    assert "不是磁盘镜像" in shown[not_a_disk.id] and "partition" not in shown[not_a_disk.id]
    assert "导入源返回 HTTP 404" in shown[missing.id] and "from source" not in shown[missing.id]
    assert "HTTP 404" in shown["img-acme0004"]  # English, as stored


async def test_chinese_command_palette_lists_every_command_in_chinese(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        commands = list(app.get_system_commands(app.screen))
        assert len(commands) > 10
        untranslated = [c.title for c in commands if not CJK.search(c.title) or not CJK.search(c.help)]
        assert untranslated == []


async def test_chinese_footer_and_palette_prompt(images: Catalog, people: People) -> None:
    from textual.command import CommandInput

    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        footer = {b.description for _k, b in app._bindings if b.action == "command_palette"}
        assert footer == {"命令面板"}
        await pilot.press("ctrl+p")
        await settle(pilot)
        assert app.screen.query_one(CommandInput).placeholder == "搜索命令…"
