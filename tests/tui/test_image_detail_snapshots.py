"""Snapshots of the image detail screen at 80×24 and 120×40, in English and Chinese (fixed IDs, times
and checksums; no refresh timer)."""

from __future__ import annotations

from typing import Any

import pytest

from core.catalog.catalog import Catalog
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle
from tests.tui.test_image_detail import with_checksums
from tui.i18n import set_language

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


def opener(image_id: str) -> Any:
    async def open_detail(pilot: Any) -> None:
        await settle(pilot)
        move_to(pilot.app, image_id)
        await pilot.press("enter")
        await settle(pilot)

    return open_detail


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_image_detail(images: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str) -> None:
    with_checksums(images)
    app = make_app(images, people.owner, language=language)
    assert snap_compare(app, terminal_size=size, run_before=opener("img-acme0001"))


@pytest.mark.parametrize("image_id", ["img-acme0003", "img-acme0004"], ids=["importing", "failed"])
def test_image_detail_of_work_and_failure(images: Catalog, people: People, snap_compare: Any, image_id: str) -> None:
    assert snap_compare(make_app(images, people.owner), terminal_size=(80, 24), run_before=opener(image_id))
