"""The accounts screen (`u` on the image list): tenants, accounts and SSH keys, each action done through
core and checked in the catalog afterwards, each with core's refusal shown; snapshots in both languages."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlmodel import select
from textual import events
from textual.widgets import DataTable, Input, Select
from textual.widgets._footer import FooterKey

from core.accounts.accounts import list_accounts, list_tenants
from core.accounts.keys import add_key, list_keys
from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Account, AccountKey, Tenant
from tests.conftest import People
from tests.tui.conftest import BASE, make_app, settle
from tui.i18n import set_language
from tui.screens.help import key_rows

# A fixed key, so that the snapshots show the same fingerprint every run.
FIXED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK9GhxY0nVgrfmFvLhD69hIgqfPKOR7ErEr5Fj5yiUDC alice@laptop"


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    """The language is process-wide: leave English for the next test."""
    yield
    set_language("en")


def new_key(comment: str = "test@host") -> str:
    blob = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return f"{blob.decode()} {comment}"


def register(catalog: Catalog, actor: Any, account: str, line: str) -> dict[str, Any]:
    import io

    return add_key(catalog, actor, account, io.BytesIO(line.encode()))


def notes(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def table(app: Any, name: str) -> DataTable[Any]:
    found: DataTable[Any] = app.screen.query_one(f"#{name}-table", DataTable)
    return found


def shown(app: Any, name: str) -> list[list[str]]:
    rows = table(app, name)
    return [[str(cell).rstrip() for cell in rows.get_row_at(row)] for row in range(rows.row_count)]


def account_names(catalog: Catalog, actor: Any) -> list[str]:
    return [a["name"] for a in list_accounts(catalog, actor)]


def move_to_account(app: Any, name: str) -> None:
    names = [row[0] for row in shown(app, "accounts")]
    table(app, "accounts").move_cursor(row=names.index(name), animate=False)


def assert_readable(app: Any, width: int) -> None:
    """Every column of the visible tables fits without scrolling sideways; every footer key is on screen."""
    for rows in app.screen.query(DataTable):
        if rows.display and rows.region.width:
            assert rows.virtual_size.width <= rows.scrollable_content_region.width, rows.id
    keys = sorted((key.region for key in app.screen.query(FooterKey)), key=lambda region: region.x)
    assert keys and all(region.width > 0 for region in keys) and keys[-1].right <= width
    # none hidden under the next one (the palette's key is docked on the right)
    assert all(left.right <= right.x for left, right in pairwise(keys))


async def open_accounts(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("u")
    await settle(pilot)
    assert type(pilot.app.screen).__name__ == "AccountsScreen"


async def type_into(pilot: Any, field: str, text: str) -> None:
    box = pilot.app.screen.query_one(f"#{field}", Input)
    box.focus()
    box.value = ""
    await pilot.press(*text)


# ---- the lists ----------------------------------------------------------------------------------


async def test_admin_sees_every_account_with_its_keys_and_every_tenant(images: Catalog, people: People) -> None:
    key = register(images, people.admin, "acme-owner", new_key("owner@laptop"))
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_accounts(pilot)
        assert shown(app, "accounts") == [
            ["acme-manager", "acme", "member", "manage", "0"],
            ["acme-owner", "acme", "tenant owner", "everything", "1"],
            ["acme-viewer", "acme", "member", "view", "0"],
            ["admin", "–", "platform admin", "everything", "0"],
            ["globex-owner", "globex", "tenant owner", "everything", "0"],
        ]
        move_to_account(app, "acme-owner")
        await settle(pilot)
        assert shown(app, "keys") == [[key["fingerprint"], "owner@laptop"]]
        assert_readable(app, 80)
        footer = {str(k.description) for k in app.screen.query(FooterKey)}
        assert {"New", "Edit", "Delete", "Add key", "Remove key", "Back", "Keys", "Guide"} <= footer
        await pilot.press("t")
        await settle(pilot)
        assert [row[:2] for row in shown(app, "tenants")] == [["acme", "3"], ["globex", "1"]]
        footer = {str(k.description) for k in app.screen.query(FooterKey)}
        assert {"New", "Back"} <= footer and not {"Edit", "Add key", "Remove key"} & footer
        assert_readable(app, 80)
        await pilot.press("escape")
        assert type(app.screen).__name__ == "ImagesScreen"


async def test_the_image_list_offers_the_screen_in_the_keys_and_the_palette(images: Catalog, people: People) -> None:
    app = make_app(images, people.viewer, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "账户" in titles
        assert ("u", "账户", "租户、账户和 SSH 密钥") in key_rows(app, app.screen)  # what ? lists
        await open_accounts(pilot)


async def test_a_member_sees_only_itself_and_an_owner_its_tenant(images: Catalog, people: People) -> None:
    """What `account list` and `tenant list` show to a non-admin, no more."""
    for actor, accounts in (
        (people.viewer, ["acme-viewer"]),
        (people.owner, ["acme-manager", "acme-owner", "acme-viewer"]),
    ):
        app = make_app(images, actor)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_accounts(pilot)
            assert [row[0] for row in shown(app, "accounts")] == accounts
            assert [row[0] for row in shown(app, "tenants")] == ["acme"]


async def test_wide_lists_show_created_and_key_type(images: Catalog, people: People) -> None:
    key = register(images, people.admin, "admin", FIXED_KEY)
    app = make_app(images, people.admin)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "admin")
        await settle(pilot)
        [row] = shown(app, "keys")
        assert row[:3] == [key["fingerprint"], "ssh-ed25519", "alice@laptop"]
        assert len(shown(app, "accounts")[0]) == 6
        assert_readable(app, 120)


async def test_in_chinese_roles_and_perms_are_translated(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_accounts(pilot)
        assert shown(app, "accounts")[0][2:4] == ["成员", "管理"]
        assert shown(app, "accounts")[3][2:4] == ["平台管理员", "全部"]
        assert_readable(app, 80)
        await pilot.press("t")
        await settle(pilot)
        assert_readable(app, 80)


# ---- tenants ------------------------------------------------------------------------------------


async def test_create_a_tenant_and_a_duplicate_is_refused(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("t", "n")
        await settle(pilot)
        assert type(app.screen).__name__ == "TenantCreateScreen"
        await type_into(pilot, "name", "acme")
        await pilot.press("enter")
        await settle(pilot)
        assert "tenant acme already exists" in notes(app)
        assert type(app.screen).__name__ == "TenantCreateScreen"  # open still, to correct the name
        await type_into(pilot, "name", "initech")
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "AccountsScreen"
        assert "Created tenant initech." in notes(app)
        assert [t["name"] for t in list_tenants(images, people.admin)] == ["acme", "globex", "initech"]
        assert [row[0] for row in shown(app, "tenants")] == ["acme", "globex", "initech"]


async def test_a_non_admin_is_refused_a_tenant(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("t", "n")
        await settle(pilot)
        await type_into(pilot, "name", "initech")
        await pilot.press("enter")
        await settle(pilot)
        assert "only platform admins may create tenants" in notes(app)
        assert [t["name"] for t in list_tenants(images, people.admin)] == ["acme", "globex"]
        await pilot.press("escape")
        assert type(app.screen).__name__ == "AccountsScreen"


# ---- accounts -----------------------------------------------------------------------------------


async def test_create_an_account_and_a_duplicate_is_refused(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert type(app.screen).__name__ == "AccountCreateScreen"
        app.screen.query_one("#tenant", Select).value = "globex"
        app.screen.query_one("#perm", Select).value = "manage"
        await type_into(pilot, "name", "acme-owner")
        await pilot.press("enter")
        await settle(pilot)
        assert "account acme-owner already exists" in notes(app)
        await type_into(pilot, "name", "bob")
        await pilot.press("enter")
        await settle(pilot)
        assert "Created account bob." in notes(app)
        [bob] = [a for a in list_accounts(images, people.admin) if a["name"] == "bob"]
        assert (bob["tenant"], bob["role"], bob["perm"]) == ("globex", "member", "manage")
        assert ["bob", "globex", "member", "manage", "0"] in shown(app, "accounts")


async def test_create_a_platform_admin_has_no_tenant_nor_perm(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("n")
        await settle(pilot)
        app.screen.query_one("#role", Select).value = "admin"
        await settle(pilot)
        assert app.screen.query_one("#tenant", Select).disabled and app.screen.query_one("#perm", Select).disabled
        await type_into(pilot, "name", "carol")
        await pilot.press("enter")
        await settle(pilot)
        [carol] = [a for a in list_accounts(images, people.admin) if a["name"] == "carol"]
        assert (carol["tenant"], carol["role"], carol["perm"]) == (None, "admin", None)


async def test_an_owner_is_refused_another_owner(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("n")
        await settle(pilot)
        app.screen.query_one("#role", Select).value = "owner"
        await type_into(pilot, "name", "second-owner")
        await pilot.press("enter")
        await settle(pilot)
        assert "only platform admins may create tenant owners" in notes(app)
        assert "second-owner" not in account_names(images, people.admin)


async def test_change_a_member_s_perm_and_tenant(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-viewer")
        await pilot.press("e")
        await settle(pilot)
        assert type(app.screen).__name__ == "AccountSetScreen"
        app.screen.query_one("#perm", Select).value = "manage"
        app.screen.query_one("#tenant", Select).value = "globex"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "Saved account acme-viewer." in notes(app)
        [viewer] = [a for a in list_accounts(images, people.admin) if a["name"] == "acme-viewer"]
        assert (viewer["tenant"], viewer["perm"]) == ("globex", "manage")
        assert ["acme-viewer", "globex", "member", "manage", "0"] in shown(app, "accounts")


async def test_an_owner_may_not_move_a_member_and_a_member_changes_nothing(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-viewer")
        await pilot.press("e")
        await settle(pilot)
        assert [str(value) for _label, value in app.screen.query_one("#tenant", Select)._options] == ["acme"]
        app.screen.query_one("#perm", Select).value = "manage"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "Saved account acme-viewer." in notes(app)  # an owner changes its members' perm
    app = make_app(images, people.viewer)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("e")
        await settle(pilot)
        app.screen.query_one("#perm", Select).value = "view"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "account acme-viewer may not change account acme-viewer" in notes(app)
        assert [a["perm"] for a in list_accounts(images, people.viewer)] == ["manage"]


async def test_delete_behind_a_confirmation_that_says_what_goes(images: Catalog, people: People) -> None:
    register(images, people.admin, "acme-viewer", new_key())
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-viewer")
        await pilot.press("d")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        said = " ".join(str(static.render()) for static in app.screen.query("Static, Label"))
        assert "SSH keys are removed" in said and "link it made is revoked" in said and "sessions end" in said
        await pilot.press("n")
        await settle(pilot)
        assert "acme-viewer" in account_names(images, people.admin)
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert "acme-viewer" not in account_names(images, people.admin)
        assert "Deleted account acme-viewer: 1 key(s) removed, 0 link(s) revoked." in notes(app)
        assert "acme-viewer" not in [row[0] for row in shown(app, "accounts")]


async def test_an_admin_may_not_delete_itself(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "admin")
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert "account admin cannot delete itself; another platform admin may" in notes(app)
        assert "admin" in account_names(images, people.admin)


# ---- keys ---------------------------------------------------------------------------------------


async def paste_key(pilot: Any, line: str) -> None:
    box = pilot.app.screen.query_one("#key", Input)
    box.focus()
    box.post_message(events.Paste(line))
    await settle(pilot)


async def test_add_a_key_by_pasting_it_and_text_that_is_no_key_is_refused(images: Catalog, people: People) -> None:
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-manager")
        await pilot.press("k")
        await settle(pilot)
        assert type(app.screen).__name__ == "KeyAddScreen"
        await paste_key(pilot, "ssh-ed25519 not-base64!! me@host")
        assert "not a valid OpenSSH public key" in str(app.screen.query_one("#key-check").render())
        await pilot.press("enter")
        await settle(pilot)
        assert any(note.startswith("not a valid OpenSSH public key") for note in notes(app))
        assert list_keys(images, people.admin, "acme-manager") == []
        line = new_key("manager@laptop")
        app.screen.query_one("#key", Input).value = ""
        await paste_key(pilot, line)
        assert "fingerprint SHA256:" in str(app.screen.query_one("#key-check").render())
        await pilot.press("enter")
        await settle(pilot)
        [key] = list_keys(images, people.admin, "acme-manager")
        assert f"Added key {key['fingerprint']} to acme-manager." in notes(app)
        assert shown(app, "keys") == [[key["fingerprint"], "manager@laptop"]]
        assert ["acme-manager", "acme", "member", "manage", "1"] in shown(app, "accounts")


async def test_an_owner_may_not_register_a_key_on_its_member(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-manager")
        await pilot.press("k")
        await settle(pilot)
        await paste_key(pilot, new_key())
        await pilot.press("enter")
        await settle(pilot)
        assert "only platform admins may register SSH keys on another account" in notes(app)
        assert list_keys(images, people.admin, "acme-manager") == []


async def test_remove_a_key_behind_a_confirmation(images: Catalog, people: People) -> None:
    first = register(images, people.admin, "acme-owner", new_key("one"))
    second = register(images, people.admin, "acme-owner", new_key("two"))
    app = make_app(images, people.admin)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        move_to_account(app, "acme-owner")
        await pilot.press("tab", "down")  # to the keys, the second one
        await pilot.press("x")
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("escape")
        await settle(pilot)
        assert len(list_keys(images, people.admin, "acme-owner")) == 2
        await pilot.press("delete")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert [k["fingerprint"] for k in list_keys(images, people.admin, "acme-owner")] == [first["fingerprint"]]
        assert f"Removed key {second['fingerprint']} from acme-owner." in notes(app)
        assert shown(app, "keys") == [[first["fingerprint"], "one"]]


async def test_a_member_removes_its_own_key_with_d_among_the_keys(images: Catalog, people: People) -> None:
    """The list a member sees holds only itself, whose keys it may remove; d in the keys is the key."""
    register(images, people.admin, "acme-viewer", new_key())
    app = make_app(images, people.viewer)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_accounts(pilot)
        await pilot.press("tab", "d")
        await settle(pilot)
        assert "Remove an SSH key of acme-viewer?" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("y")
        await settle(pilot)
        assert list_keys(images, people.admin, "acme-viewer") == []
        assert "acme-viewer" in account_names(images, people.admin)


# ---- snapshots ----------------------------------------------------------------------------------


@pytest.fixture
def fixed_times(images: Catalog, people: People) -> Catalog:
    """Accounts, tenants and a key with fixed times (the wide lists show them)."""
    register(images, people.admin, "acme-owner", FIXED_KEY)
    with db.write_session(images.engine) as session:
        for model in (Account, Tenant, AccountKey):
            for row in session.exec(select(model)):
                row.created_at = BASE
                session.add(row)
    return images


SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_accounts(
    fixed_times: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str
) -> None:
    async def open_owner(pilot: Any) -> None:
        await open_accounts(pilot)
        move_to_account(pilot.app, "acme-owner")
        await settle(pilot)

    app = make_app(fixed_times, people.admin, language=language)
    assert snap_compare(app, terminal_size=size, run_before=open_owner)


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_tenants(
    fixed_times: Catalog, people: People, snap_compare: Any, size: tuple[int, int], language: str
) -> None:
    async def open_tenants(pilot: Any) -> None:
        await open_accounts(pilot)
        await pilot.press("t")
        await settle(pilot)

    app = make_app(fixed_times, people.admin, language=language)
    assert snap_compare(app, terminal_size=size, run_before=open_tenants)


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize("key", ["n", "e", "d", "k"], ids=["new", "edit", "delete", "add_key"])
def test_snapshot_dialogs(fixed_times: Catalog, people: People, snap_compare: Any, key: str, language: str) -> None:
    async def open_dialog(pilot: Any) -> None:
        await open_accounts(pilot)
        move_to_account(pilot.app, "acme-viewer")
        await pilot.press(key)
        await settle(pilot)
        for box in pilot.app.screen.query(Input):
            box.cursor_blink = False

    app = make_app(fixed_times, people.admin, language=language)
    assert snap_compare(app, terminal_size=(80, 24), run_before=open_dialog)
