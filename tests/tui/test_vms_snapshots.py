"""Snapshots of the VMs screen and its dialogs at 80×24 and 120×40, in English and Chinese (fixed IDs
and times; no refresh timer)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Vm
from core.compute.vms import create_vm
from tests.conftest import People
from tests.tui.conftest import make_app, settle
from tui.i18n import set_language

SIZES = [(80, 24), (120, 40)]
LANGUAGES = ["en", "zh_CN"]
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


@pytest.fixture
def vms(images: Catalog, people: People) -> Catalog:
    """Two defined VMs (the tests' compute driver is `none`) with fixed IDs and times."""
    for number, (image_id, name) in enumerate((("img-acme0001", "app01"), ("img-acme0002", "db01")), start=1):
        made = create_vm(images, people.owner, image_id, name, "Passw0rd!x")
        with db.write_session(images.engine) as session:
            vm = session.get(Vm, made["id"])
            assert vm is not None
            session.delete(vm)
            session.flush()
            session.add(Vm(**{**vm.model_dump(), "id": f"vm-fixed00{number}", "created_at": CREATED}))
    return images


async def open_vms(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("m")
    await settle(pilot)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_vms_screen(vms: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str) -> None:
    assert snap_compare(make_app(vms, people.owner, language=language), terminal_size=size, run_before=open_vms)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_capture_dialog(vms: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str) -> None:
    async def open_capture(pilot: Any) -> None:
        await open_vms(pilot)
        await pilot.press("i")
        await settle(pilot)

    assert snap_compare(make_app(vms, people.owner, language=language), terminal_size=size, run_before=open_capture)
