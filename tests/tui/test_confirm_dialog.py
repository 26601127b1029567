"""A confirmation's question and its "type to confirm" line wrap inside the dialog: a long sentence is
never cut at the dialog's edge (as a Label did with "…the addresses answer no mor")."""

from __future__ import annotations

from typing import Any

from core.catalog.catalog import Catalog
from tests.conftest import People
from tests.tui.conftest import make_app, settle
from tui.screens.confirm import ConfirmScreen

QUESTION = "Downloads under way stop within seconds; the addresses answer no more. " * 2
TYPED = "a-rather-long-image-name-that-someone-chose-for-their-golden-image-of-2026"


async def test_a_long_question_wraps_inside_the_dialog(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.push_screen(ConfirmScreen("Revoke?", ["lnk-1"], question=QUESTION, typed=TYPED))
        await settle(pilot)
        dialog: Any = app.screen.query_one("ConfirmScreen > Vertical")
        lines = list(app.screen.query(".dialog-text"))
        assert len(lines) == 2
        for widget in lines:
            assert widget.region.right <= dialog.region.right
            # every cell of the text is laid out: as many lines as its length needs at this width
            assert widget.size.height * widget.size.width >= len(str(widget.render()).strip())
            assert widget.size.height >= 2  # wrapped, not cut
