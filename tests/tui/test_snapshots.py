"""Snapshots of the list and the recycle bin at 80×24 and 120×40 (fixed IDs and times; no refresh timer)."""

from __future__ import annotations

from typing import Any

import pytest

from core.catalog.catalog import Catalog
from tests.conftest import People
from tests.tui.conftest import make_app, move_to, settle
from tui.i18n import set_language


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_image_list(images: Catalog, people: People, snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(images, people.owner), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_recycle_bin(images: Catalog, people: People, snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_bin(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)

    assert snap_compare(make_app(images, people.owner), terminal_size=size, run_before=open_bin)


def test_image_list_in_chinese(images: Catalog, people: People, snap_compare: Any) -> None:
    assert snap_compare(make_app(images, people.owner, language="zh_CN"), terminal_size=(80, 24), run_before=settle)


def test_delete_confirmation(images: Catalog, people: People, snap_compare: Any) -> None:
    async def confirm(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("space", "down", "space", "d")
        await settle(pilot)

    assert snap_compare(make_app(images, people.owner), terminal_size=(80, 24), run_before=confirm)


@pytest.fixture
def fixed_import_root(images: Catalog) -> Catalog:
    """The wizard shows its folder: use one whose path does not change between runs."""
    from pathlib import Path

    root = Path("/tmp/imagehub-tui-snapshots/incoming")
    root.mkdir(parents=True, exist_ok=True)
    for name in ("centos-7.9.qcow2", "win2016.vhd"):
        (root / name).write_bytes(b"")
    images.settings.tui.import_root = root
    if hasattr(images.settings.import_, "local_roots"):
        images.settings.import_.local_roots = [root]
    return images


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_import_wizard(fixed_import_root: Catalog, people: People, snap_compare: Any, size: tuple[int, int]) -> None:
    async def open_wizard(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)
        await pilot.press(*"x" * 3)
        app = pilot.app
        app.screen.query_one("#size").value = "10"
        await settle(pilot)
        for box in app.screen.query("Input"):
            box.cursor_blink = False  # a blinking cursor makes the picture depend on timing
        tree = app.screen.query_one("#files")
        for _attempt in range(100):  # the tree loads its folder in a worker of its own
            if len(tree.root.children) == 2:
                break
            await pilot.pause(0.02)
        await settle(pilot)

    assert snap_compare(make_app(fixed_import_root, people.owner), terminal_size=size, run_before=open_wizard)


FIXED_LINK = {
    "id": "lnk-fixed001",
    "image_id": "img-acme0001",
    "format": "qcow2",
    "filename": "img-acme0001.qcow2",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "size": 67436544,
    "virtual_size": 21474836480,
    "state": "active",
    "expires_at": "2026-01-03T03:04:05Z",
    "http": "http://images.example.com:8080/d/lnk-fixed001.TOKEN/img-acme0001.qcow2",
    "ftp": "ftp://lnk-fixed001.TOKEN@images.example.com:2121/img-acme0001.qcow2",
    "sftp": "sftp://lnk-fixed001.TOKEN@images.example.com:2222/img-acme0001.qcow2",
    "sftp_command": "sftp -P 2222 -o StrictHostKeyChecking=accept-new"
    " lnk-fixed001.TOKEN@images.example.com:img-acme0001.qcow2 .",
}


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_link_screen(
    images: Catalog, people: People, snap_compare: Any, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.links import links

    monkeypatch.setattr(links, "create_link", lambda *a, **k: links.Created(dict(FIXED_LINK), "TOKEN", None))
    with images.store.image_path("img-acme0001", "raw").open("wb") as stored:  # 64 MiB on a 20 GiB disk
        stored.write(b"\x01" * (64 << 20))
        stored.truncate(20 << 30)

    async def generate(pilot: Any) -> None:
        await settle(pilot)
        move_to(pilot.app, "img-acme0001")
        await pilot.press("g", "ctrl+g")
        await settle(pilot)

    assert snap_compare(make_app(images, people.owner), terminal_size=size, run_before=generate)


def add_fixed_links(catalog: Catalog, people: People) -> None:
    """Links of every kind and several states, with fixed IDs and times (the owner's)."""
    from datetime import UTC, datetime

    from core.catalog import db
    from core.catalog.models import Link
    from core.images.exports import write_checksum

    write_checksum(catalog.store.image_path("img-acme0001", "raw"))
    made, later = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [  # (id, kind, image, format, filename, expires, revoked, bytes served, upload size)
        ("lnk-fixed001", "download", "img-acme0001", "raw", "img-acme0001.raw", later, None, 512, None),
        ("lnk-fixed002", "download", "img-acme0002", "raw", "img-acme0002.raw", later, made, 0, None),
        ("lnk-fixed003", "download", "img-acme0006", "raw", "img-acme0006.raw", made, None, 0, None),
        ("lnk-fixed004", "upload", "img-acme0003", "raw", "upload", later, None, 0, 3 * 1024**3),
        ("lnk-fixed005", "workbook", None, "xlsx", "images-20260102.xlsx", later, None, 0, None),
    ]
    with db.write_session(catalog.engine) as session:
        for index, (link_id, kind, image, fmt, filename, expires, revoked, served, size) in enumerate(rows):
            session.add(
                Link(
                    id=link_id,
                    kind=kind,
                    image_id=image,
                    tenant_id=people.owner.tenant_id,
                    account_id=people.owner.account_id,
                    format=fmt,
                    filename=filename,
                    token_hash=f"{index:064d}",
                    created_at=made,
                    expires_at=expires,
                    revoked_at=revoked,
                    bytes_served=served,
                    size=size,
                )
            )


def add_fixed_events(catalog: Catalog) -> None:
    """Audit events on the owner's images and a link, with fixed times (ids follow the catalog's own)."""
    import json
    from datetime import UTC, datetime, timedelta

    from core.catalog import db
    from core.catalog.models import AuditEvent

    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [  # (actor, action, target, outcome, reason, detail)
        ("acme-owner", "image.edit", "img-acme0001", "ok", None, {"description": "nginx + app"}),
        ("acme-owner", "link.create", "img-acme0001", "ok", None, {"format": "raw", "link": "lnk-fixed001"}),
        ("imagehub worker", "job.finish", "img-acme0004", "failed", "HTTP 404", {"job": 4}),
        ("acme-viewer", "image.delete", "img-acme0002", "refused", "account acme-viewer may view but not change", {}),
        ("acme-owner", "link.revoke", "img-acme0002", "ok", None, {"link": "lnk-fixed002"}),
        ("acme-manager", "vm.create", "img-acme0006", "refused", "image img-acme0006 is not x86_64", {}),
    ]
    with db.write_session(catalog.engine) as session:
        for index, (actor, action, target, outcome, reason, detail) in enumerate(rows):
            session.add(
                AuditEvent(
                    at=start + timedelta(minutes=index),
                    actor=actor,
                    action=action,
                    target=target,
                    outcome=outcome,
                    reason=reason,
                    detail=json.dumps(detail) if detail else None,
                )
            )


LANGUAGES = ["en", "zh_CN"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_links_screen(images: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str) -> None:
    add_fixed_links(images, people)

    async def open_links(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)

    app = make_app(images, people.owner, language=language)
    assert snap_compare(app, terminal_size=size, run_before=open_links)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_audit_screen(images: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str) -> None:
    add_fixed_events(images)

    async def open_audit(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        for box in pilot.app.screen.query("Input"):
            box.cursor_blink = False

    app = make_app(images, people.owner, language=language)
    assert snap_compare(app, terminal_size=size, run_before=open_audit)
