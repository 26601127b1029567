"""The audit screen (`a` on the image list): admins and owners read their trail newest first, one page at
a time; the image, account and action filters each narrow the rows; a member is refused with core's
reason; actions and outcomes are in people's words, in English and Chinese."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Select
from textual.widgets._footer import FooterKey

from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError
from core.images.images import edit_image
from core.links.links import create_link, revoke_link
from tests.conftest import People
from tests.tui.conftest import make_app, settle
from tui.i18n import set_language
from tui.screens.audit import ACTION_LABELS


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    yield
    set_language("en")


@pytest.fixture
def trail(images: Catalog, people: People) -> Catalog:
    edit_image(images, people.owner, "img-acme0001", description="edited by the owner")
    edit_image(images, people.manager, "img-acme0002", description="edited by the manager")
    link = create_link(images, people.owner, "img-acme0001").view
    revoke_link(images, people.owner, link["id"])
    with pytest.raises(ImagehubError):
        edit_image(images, people.viewer, "img-acme0006", description="a viewer may not")
    edit_image(images, people.other_owner, "img-glbx0001", description="globex's own")
    return images


def notes(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def table(app: Any) -> DataTable[Any]:
    return app.screen.query_one("#audit-table", DataTable)


def rows(app: Any) -> list[list[str]]:
    grid = table(app)
    return [[str(cell).rstrip() for cell in grid.get_row_at(row)] for row in range(grid.row_count)]


def column(app: Any, key: str) -> list[str]:
    grid = table(app)
    index = [str(c.key.value) for c in grid.ordered_columns].index(key)
    return [row[index] for row in rows(app)]


async def open_audit(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("a")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "AuditScreen"


def test_every_action_in_the_trail_has_a_label(trail: Catalog, people: People) -> None:
    from core.accounts.trail import trail_actions

    assert set(trail_actions(trail, people.admin)) - set(ACTION_LABELS) == set()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_an_owner_reads_its_tenants_trail_newest_first(trail: Catalog, people: People, size: Any) -> None:
    app = make_app(trail, people.owner)
    async with app.run_test(size=size) as pilot:
        await open_audit(pilot)
        actions = column(app, "action")
        assert actions[:3] == ["edit image", "revoke link", "make link"]  # the viewer's refusal first
        assert column(app, "outcome")[0] == "refused"
        assert "img-glbx0001" not in column(app, "target")
        grid = table(app)
        assert grid.virtual_size.width <= grid.scrollable_content_region.width
        keys = list(app.screen.query(FooterKey))
        assert keys and all(key.region.right <= size[0] for key in keys)
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_filters_by_image_account_and_action_each_narrow_the_rows(trail: Catalog, people: People) -> None:
    app = make_app(trail, people.admin)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_audit(pilot)
        everything = len(rows(app))
        await pilot.press("slash", *"img-acme0002")
        await settle(pilot)
        assert set(column(app, "target")) == {"img-acme0002"}
        assert len(rows(app)) < everything
        app.screen.query_one("#audit-image", Input).value = ""
        await settle(pilot)
        assert len(rows(app)) == everything

        app.screen.query_one("#audit-account", Input).value = "acme-manager"
        await settle(pilot)
        assert set(column(app, "actor")) == {"admin", "acme-manager"}  # its creation by admin, its edit
        assert set(column(app, "action")) == {"create account", "edit image"}
        app.screen.query_one("#audit-account", Input).value = ""
        await settle(pilot)

        select = app.screen.query_one("#audit-action", Select)
        assert ("revoke link", "link.revoke") in [(str(p), v) for p, v in select._options]
        select.value = "link.revoke"
        await settle(pilot)
        assert column(app, "action") == ["revoke link"]


async def test_pages_of_a_long_trail(trail: Catalog, people: People) -> None:
    from tui.screens.audit import AuditScreen

    app = make_app(trail, people.admin)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.push_screen(AuditScreen(refresh_seconds=0, page_size=3))
        await settle(pilot)
        first = column(app, "action")
        assert len(first) == 3
        await pilot.press("right_square_bracket")
        await settle(pilot)
        second = column(app, "action")
        assert len(second) == 3 and rows(app) != []
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert column(app, "action") == first


@pytest.mark.parametrize("language", ["en", "zh_CN"])
async def test_a_member_is_refused_with_cores_reason(trail: Catalog, people: People, language: str) -> None:
    app = make_app(trail, people.manager, language=language)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_audit(pilot)
        assert rows(app) == []
        reason = {
            "en": "only platform admins and tenant owners may read the audit trail",
            "zh_CN": "只有平台管理员和租户所有者可以查看审计日志",
        }[language]
        assert reason in notes(app)
        assert reason in str(app.screen.query_one("#audit-status").render())


async def test_chinese_words_for_actions_and_outcomes(trail: Catalog, people: People) -> None:
    app = make_app(trail, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_audit(pilot)
        assert column(app, "action")[:3] == ["编辑镜像", "撤销链接", "创建链接"]
        assert column(app, "outcome")[:2] == ["被拒绝", "已完成"]


async def test_the_first_page_refreshes_while_shown(trail: Catalog, people: People) -> None:
    app = make_app(trail, people.owner, refresh_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_audit(pilot)
        before = len(rows(app))
        edit_image(trail, people.owner, "img-acme0006", description="meanwhile")
        for _attempt in range(100):
            if len(rows(app)) > before:
                break
            await pilot.pause(0.05)
        assert column(app, "target")[0] == "img-acme0006"


def test_the_demos_actions_and_job_workers_are_said_in_words() -> None:
    from core.jobs.jobs import worker_id
    from core.setup.demo import SEED_DONE, SEED_STARTED
    from tui.screens.audit import action_label, actor_label

    assert {SEED_STARTED, SEED_DONE} <= set(ACTION_LABELS)
    assert action_label(SEED_STARTED) == "seed the demo"
    assert actor_label(worker_id("serve")) == "serve worker"
    assert actor_label("tui@vm:14094:d9a30e") == "tui worker"
    assert actor_label("acme-owner") == "acme-owner"  # an account is named as it is
    assert actor_label("mallory@evil") == "mallory@evil"  # only a worker's whole name is shortened
