"""Checklist L7: user text (image names, failure reasons, the filter) is shown as typed wherever
Textual renders markup — list cells, the detail line, the status line, dialogs and notifications —
and a control character (ESC) never reaches the terminal. A platform admin sees every tenant's
names, so one tenant's image named `[/bogus]x` must not end the admin's TUI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import delete

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job
from tests.conftest import People
from tests.importkit import HttpBehaviour, http_server, import_and_wait, make_disk, port_of
from tests.tui.conftest import add_images, image_list, make_app, move_to, settle, status_of

CLOSING, ACTION, BRACKETS, ESCAPE, VARIABLE = "[/bogus]x", "[@click=app.quit]y", "a[b]c", "\x1b[31mred", "[$bogus]z"
SHOWN_ESCAPE = "\\x1b[31mred"  # what the screen shows for ESC [31m red
REASON = "[/error] HTTP 404 [b]"

# (id, name, tenant, os_type, platform, version, arch, status, size_gb, description, error)
HOSTILE = [
    ("img-glbx0101", CLOSING, "globex", "Linux", "CentOS", "7.9", "x86_64", "importing", 20, "[/i]desc", None),
    ("img-glbx0102", ACTION, "globex", "Linux", "CentOS", "7.9", "x86_64", "available", 20, "", None),
    ("img-glbx0103", BRACKETS, "globex", "Linux", "CentOS", "7.9", "x86_64", "available", 20, "[red]", None),
    ("img-glbx0104", ESCAPE, "globex", "Linux", "CentOS", "7.9", "x86_64", "available", 20, "\x1b]0;t\x07", None),
    ("img-glbx0105", VARIABLE, "globex", "Linux", "CentOS", "7.9", "x86_64", "import_failed", 20, "", REASON),
]


def screen_text(app: Any) -> str:
    """What the terminal shows of the current screen (toasts included), line by line."""
    lines = [strip.text for strip in app.screen._compositor.render_strips()]
    assert not any("\x1b" in line or "\x07" in line for line in lines)  # no raw control character
    return "\n".join(lines)


def messages(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


async def test_l7_hostile_names_are_shown_literally_and_the_admin_tui_keeps_running(
    catalog: Catalog, people: People
) -> None:
    add_images(catalog, HOSTILE)
    app = make_app(catalog, people.admin)  # strict: any markup error would fail the test
    async with app.run_test(size=(150, 45), notifications=True) as pilot:
        await settle(pilot)
        listing = image_list(app)
        table = listing.table
        cells = {row: table.get_cell(row, "name").plain.rstrip() for row in [r["id"] for r in listing.rows]}
        assert cells["img-glbx0101"] == CLOSING and cells["img-glbx0102"] == ACTION
        assert cells["img-glbx0103"] == BRACKETS and cells["img-glbx0104"] == SHOWN_ESCAPE
        assert cells["img-glbx0105"] == VARIABLE
        shown = screen_text(app)
        for name in (CLOSING, ACTION, BRACKETS, SHOWN_ESCAPE, VARIABLE):
            assert name in shown, name

        # the detail line: description and failure reason as stored
        move_to(app, "img-glbx0105")
        await settle(pilot)
        assert f"failed: {REASON}" in screen_text(app)
        move_to(app, "img-glbx0104")
        await settle(pilot)
        assert "\\x1b]0;t\\x07" in screen_text(app)

        # the delete confirmation lists the names as they are; No leaves them alone
        for image_id in ("img-glbx0102", "img-glbx0103", "img-glbx0104"):
            move_to(app, image_id)
            await pilot.press("space")
        await pilot.press("d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        shown = screen_text(app)
        assert ACTION in shown and BRACKETS in shown and SHOWN_ESCAPE in shown
        await pilot.press("n")
        await settle(pilot)
        assert status_of(catalog, "img-glbx0102") == "available"
        await pilot.press("escape")  # clear the selection

        # a refused delete: the results dialog names the image as typed
        move_to(app, "img-glbx0101")
        await pilot.press("d")
        await settle(pilot)
        assert CLOSING in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        assert type(app.screen).__name__ == "ResultsScreen"
        shown = screen_text(app)
        assert f"img-glbx0101  {CLOSING}" in shown and "importing" in shown
        await pilot.press("enter")
        await settle(pilot)

        # the edit dialog's title and fields
        move_to(app, "img-glbx0102")
        await pilot.press("e")
        await settle(pilot)
        assert type(app.screen).__name__ == "EditScreen"
        assert f"Edit {ACTION} (img-glbx0102" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)

        # the import fails meanwhile (another tenant's worker): the admin is told, literally
        with db.write_session(catalog.engine) as session:
            image = session.get(Image, "img-glbx0101")
            assert image is not None
            image.status, image.error = "import_failed", REASON
            session.add(image)
            session.exec(delete(Job).where(Job.image_id == "img-glbx0101"))  # type: ignore[call-overload]
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert f"{CLOSING} failed: {REASON}" in messages(app)
        assert f"{CLOSING} failed: {REASON}" in screen_text(app)

        # the filter is user text too
        await pilot.press("slash", *"[/x]")
        await settle(pilot)
        assert "filter: [/x]" in screen_text(app)

        assert app.is_running and app.return_code is None
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_l7_notifications_are_plain_text_unless_markup_is_asked_for(catalog: Catalog, people: People) -> None:
    app = make_app(catalog, people.admin)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        app.notify(f"{CLOSING} {ACTION} {ESCAPE}", title=BRACKETS)
        await settle(pilot)
        shown = screen_text(app)
        assert f"{CLOSING} {ACTION} {SHOWN_ESCAPE}" in shown and BRACKETS in shown
        app.notify("[b]bold[/b]", markup=True)  # the app's own markup, when asked for
        await settle(pilot)
        assert "bold" in screen_text(app) and "[b]bold" not in screen_text(app)
        assert app.is_running


async def test_u7_a_signed_source_url_never_reaches_the_screen(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path, "qcow2")
    signature = "X-Amz-Signature=5ecret5ig"
    behaviour = HttpBehaviour(files={f"/disk.qcow2?{signature}": disk}, status={"/bad.qcow2?" + signature: 403})
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        good = import_and_wait(catalog, people.owner, url=f"{base}/disk.qcow2?{signature}")
        bad = import_and_wait(catalog, people.owner, url=f"{base}/bad.qcow2?{signature}")
    assert good.status == "available" and good.source == f"{base}/disk.qcow2?***"
    assert bad.status == "import_failed" and bad.error == "HTTP 403 from source"
    app = make_app(catalog, people.owner)
    async with app.run_test(size=(150, 45), notifications=True) as pilot:
        await settle(pilot)
        for image in (good, bad):
            move_to(app, image.id)
            await settle(pilot)
            assert "5ecret5ig" not in screen_text(app)
            await pilot.press("e")
            await settle(pilot)
            assert "5ecret5ig" not in screen_text(app)
            await pilot.press("escape")
            await settle(pilot)
