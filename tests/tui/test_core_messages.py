"""What core says reaches the TUI in the user's language: refusals and validation messages by their
template and parameters, stored failure reasons by matching the catalog's templates; English stays
byte for byte what the CLI prints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from textual.widgets import Input, Static

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError, Msg, NotFound
from core.catalog.models import Image, Status
from core.rules import lifecycle, validation
from core.rules.lifecycle import Operation
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle
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
    assert tr(busy) == str(busy) == "image img-1 is importing; it can be deleted only when available or import_failed"
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


def test_a_stored_reason_is_matched_against_the_templates_nested_ones_too() -> None:
    set_language("zh_CN")
    policy = (
        "source refused by the network policy: 10.1.2.3 is not an allowed destination "
        "(private, loopback, link-local and metadata addresses are refused)"
    )
    shown = tr(policy)
    assert "10.1.2.3" in shown and CJK.search(shown) and "destination" not in shown
    sha = "SHA-256 mismatch: expected " + "a" * 64 + ", got " + "b" * 64
    shown = tr(sha)
    assert "a" * 64 in shown and "b" * 64 in shown and "expected" not in shown
    nested = "vm vm-7 could not be started, so it was not created: source unreachable: connection refused"
    shown = tr(nested)
    assert "vm-7" in shown and "could not be started" not in shown and "connection refused" not in shown
    # Nothing matches: shown as it is, never mangled.
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


async def test_chinese_app_shows_a_refused_delete_and_a_failure_reason_in_chinese(
    images: Catalog, people: People
) -> None:
    with db.write_session(images.engine) as session:
        failed = session.get(Image, "img-acme0004")
        assert failed is not None
        failed.error = "source unreachable: host name mirror.example not found"
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0004")
        await settle(pilot)
        detail = str(app.screen.query_one("#list-detail", Static).render())
        assert "mirror.example" in detail and "not found" not in detail and "unreachable" not in detail
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
