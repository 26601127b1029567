"""Account lifecycle: delete, `set --perm`, moves between tenants; who may do each; what follows
(keys removed, links revoked or `access_lost`, the name free again, the audit trail kept)."""

from __future__ import annotations

import threading
from pathlib import Path

import asyncssh
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from core.accounts import accounts, keys
from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict, Forbidden, ImagehubError, Invalid, NotFound
from core.catalog.models import Account, AccountKey, Status
from core.images import images
from core.links import links
from core.rules.access import Actor
from tests.conftest import BACKENDS, People, actor
from tests.factories import image_row, make_image


def names(catalog: Catalog, who: Actor) -> list[str]:
    return [a["name"] for a in accounts.list_accounts(catalog, who)]


def account_row(catalog: Catalog, name: str) -> Account | None:
    with db.read_session(catalog.engine) as session:
        return session.exec(select(Account).where(Account.name == name, Account.deleted_at == None)).first()  # noqa: E711


def add_key(catalog: Catalog, who: Actor, account: str, tmp_path: Path) -> str:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=account)
    path = tmp_path / f"{account}-{len(list(tmp_path.iterdir()))}.pub"
    key.write_public_key(str(path))
    return keys.add_key(catalog, who, account, path)["fingerprint"]


def link_of(catalog: Catalog, who: Actor, image_id: str) -> str:
    return links.create_link(catalog, who, image_id, "raw").view["id"]


def refusal(call, *args, **kwargs) -> ImagehubError:  # type: ignore[no-untyped-def]
    with pytest.raises(ImagehubError) as caught:
        call(*args, **kwargs)
    return caught.value


def last_refusal(catalog: Catalog, action: str) -> dict:
    return audit.list_events(catalog.engine, action=action, limit=1)[0]


# ---- delete ------------------------------------------------------------------------------------


def test_admin_deletes_a_member_keys_go_links_revoked_images_stay_history_kept(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="web", with_file=True)
    link_id = link_of(catalog, people.manager, image_id)
    other_link = link_of(catalog, people.owner, image_id)
    fingerprint = add_key(catalog, people.admin, "acme-manager", tmp_path)

    deleted = accounts.delete_account(catalog, people.admin, "acme-manager")

    assert deleted["name"] == "acme-manager" and deleted["tenant"] == "acme" and deleted["deleted_at"]
    assert deleted["keys_removed"] == 1 and deleted["links_revoked"] == 1
    assert "acme-manager" not in names(catalog, people.admin)
    assert links.check_links(catalog, [link_id, other_link]) == {link_id: "revoked", other_link: None}
    shown = links.get_link(catalog, people.owner, link_id)
    assert shown["state"] == "revoked" and shown["created_by"] == "acme-manager"  # history keeps the name
    with db.read_session(catalog.engine) as session:
        assert session.exec(select(AccountKey).where(AccountKey.fingerprint == fingerprint)).first() is None
    assert image_row(catalog, image_id).status == Status.AVAILABLE  # images belong to the tenant
    # The deleted account acts no more: the CLI resolves it as unknown.
    with pytest.raises(Forbidden, match="account acme-manager does not exist"):
        actor(catalog, "acme-manager")
    # A stale actor (resolved before the delete) is refused inside the transaction too.
    with pytest.raises(Forbidden, match="account acme-manager does not exist"):
        accounts.set_account(catalog, people.manager, "acme-viewer", perm="manage")
    event = audit.list_events(catalog.engine, target="acme-manager", action="account.delete")[0]
    assert event["actor"] == "admin" and event["detail"]["links_revoked"] == 1 and event["detail"]["keys_removed"] == 1
    assert audit.list_events(catalog.engine, target="acme-manager", action="account.create")  # older rows stay


@BACKENDS
def test_a_deleted_name_can_be_given_again_and_the_new_account_inherits_nothing(
    catalog: Catalog, people: People
) -> None:
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="web", with_file=True)
    old_link = link_of(catalog, people.viewer, image_id)
    accounts.delete_account(catalog, people.admin, "acme-viewer")

    again = accounts.create_account(catalog, people.admin, "acme-viewer", tenant="globex", role="member")

    assert again["tenant"] == "globex" and again["id"] != people.viewer.account_id
    assert names(catalog, people.admin).count("acme-viewer") == 1
    newcomer = actor(catalog, "acme-viewer")
    assert newcomer.account_id == again["id"] and newcomer.tenant_id != people.viewer.tenant_id
    assert links.check_links(catalog, [old_link])[old_link] == "revoked"
    with pytest.raises(NotFound):
        links.get_link(catalog, newcomer, old_link)
    # Two live accounts of one name are still impossible, below the service too.
    with pytest.raises(Conflict, match="account acme-viewer already exists"):
        accounts.create_account(catalog, people.admin, "acme-viewer", tenant="acme", role="member")
    with pytest.raises(IntegrityError), db.write_session(catalog.engine) as session:
        session.add(Account(name="acme-viewer", role="member", perm="view"))
        session.flush()


def test_admin_cannot_delete_itself(catalog: Catalog, people: People) -> None:
    error = refusal(accounts.delete_account, catalog, people.admin, "admin")
    assert isinstance(error, Conflict) and error.exit_code == 5
    assert str(error) == "account admin cannot delete itself; another platform admin may"
    assert "admin" in names(catalog, people.admin)
    assert last_refusal(catalog, "account.delete")["reason"] == str(error)


@BACKENDS
def test_two_admins_deleting_each_other_at_once_leave_one(catalog: Catalog, people: People) -> None:
    accounts.create_account(catalog, people.admin, "root2", tenant=None, role="admin")
    root2 = actor(catalog, "root2")
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def delete(who: Actor, target: str) -> None:
        barrier.wait()
        try:
            outcomes[target] = accounts.delete_account(catalog, who, target)
        except ImagehubError as exc:
            outcomes[target] = exc

    threads = [threading.Thread(target=delete, args=a) for a in ((people.admin, "root2"), (root2, "admin"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    refused = [o for o in outcomes.values() if isinstance(o, ImagehubError)]
    assert len(refused) == 1, outcomes
    # The loser either no longer exists by the time it runs, or finds the last admin (PostgreSQL).
    assert isinstance(refused[0], Forbidden | Conflict), refused[0]
    with db.read_session(catalog.engine) as session:
        live_admins = session.exec(select(Account.name).where(Account.role == "admin", Account.deleted_at == None))  # noqa: E711
        assert len(live_admins.all()) == 1


def test_owner_deletes_a_member_of_its_tenant_only(catalog: Catalog, people: People) -> None:
    accounts.create_account(catalog, people.admin, "acme-owner2", tenant="acme", role="owner")
    accounts.create_account(catalog, people.admin, "globex-member", tenant="globex", role="member")
    cases = [
        (
            "acme-owner2",
            Forbidden,
            "only platform admins may delete account acme-owner2: acme-owner2 is a tenant owner",
        ),
        ("acme-owner", Forbidden, "only platform admins may delete account acme-owner: acme-owner is a tenant owner"),
        ("globex-member", NotFound, "account globex-member not found"),  # another tenant: as if unknown
        ("admin", NotFound, "account admin not found"),
        ("nobody", NotFound, "account nobody not found"),
    ]
    before = names(catalog, people.admin)
    for target, kind, message in cases:
        error = refusal(accounts.delete_account, catalog, people.owner, target)
        assert type(error) is kind and str(error) == message
        assert last_refusal(catalog, "account.delete")["target"] == target
    assert names(catalog, people.admin) == before
    assert accounts.delete_account(catalog, people.owner, "acme-viewer")["name"] == "acme-viewer"


def test_members_may_delete_or_change_no_account(catalog: Catalog, people: People) -> None:
    before = accounts.list_accounts(catalog, people.admin)
    error = refusal(accounts.delete_account, catalog, people.manager, "acme-viewer")
    assert isinstance(error, Forbidden) and str(error) == "account acme-manager may not delete account acme-viewer"
    error = refusal(accounts.set_account, catalog, people.manager, "acme-manager", perm="view")
    assert isinstance(error, Forbidden) and str(error) == "account acme-manager may not change account acme-manager"
    error = refusal(accounts.delete_account, catalog, people.viewer, "globex-owner")
    assert isinstance(error, NotFound) and str(error) == "account globex-owner not found"
    assert accounts.list_accounts(catalog, people.admin) == before


# ---- set ---------------------------------------------------------------------------------------


def test_owner_sets_a_members_perm_and_the_change_is_audited(catalog: Catalog, people: People) -> None:
    changed = accounts.set_account(catalog, people.owner, "acme-viewer", perm="manage")
    assert changed == {**changed, "name": "acme-viewer", "tenant": "acme", "role": "member", "perm": "manage"}
    assert actor(catalog, "acme-viewer").can_manage
    event = audit.list_events(catalog.engine, target="acme-viewer", action="account.set")[0]
    assert event["actor"] == "acme-owner" and event["detail"] == {"perm": ["view", "manage"]}
    # Setting what is already there changes nothing and records nothing.
    accounts.set_account(catalog, people.owner, "acme-viewer", perm="manage")
    assert len(audit.list_events(catalog.engine, target="acme-viewer", action="account.set")) == 1


def test_set_refusals_name_the_reason_and_change_nothing(catalog: Catalog, people: People) -> None:
    before = accounts.list_accounts(catalog, people.admin)
    cases = [
        (people.owner, "acme-viewer", {"tenant": "globex"}, Forbidden,
         "only platform admins may move accounts between tenants"),
        (people.owner, "acme-owner", {"perm": "view"}, Forbidden,
         "only platform admins may change account acme-owner: acme-owner is a tenant owner"),
        (people.owner, "globex-owner", {"perm": "view"}, NotFound, "account globex-owner not found"),
        (people.admin, "acme-owner", {"perm": "view"}, Invalid,
         "--perm applies to members only (owners and admins manage everything they see)"),
        (people.admin, "admin", {"tenant": "acme"}, Invalid, "platform admins belong to no tenant; leave out --tenant"),
        (people.admin, "acme-viewer", {"tenant": "initech"}, NotFound, "tenant initech not found"),
        (people.admin, "acme-viewer", {"perm": "root"}, Invalid, "perm root is unknown; choose one of view, manage"),
        (people.admin, "acme-viewer", {}, Invalid, "nothing to change; give --perm or --tenant"),
        (people.admin, "nobody", {"perm": "view"}, NotFound, "account nobody not found"),
    ]  # fmt: skip
    for who, target, change, kind, message in cases:
        error = refusal(accounts.set_account, catalog, who, target, **change)
        assert type(error) is kind and str(error) == message, (target, change)
        assert last_refusal(catalog, "account.set")["reason"] == message
    assert accounts.list_accounts(catalog, people.admin) == before


@BACKENDS
def test_a_moved_accounts_links_to_its_old_tenant_stop_working(catalog: Catalog, people: People) -> None:
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="web", with_file=True)
    moved_link = link_of(catalog, people.viewer, image_id)
    owners_link = link_of(catalog, people.owner, image_id)

    moved = accounts.set_account(catalog, people.admin, "acme-viewer", tenant="globex")

    assert moved["tenant"] == "globex"
    assert links.check_links(catalog, [moved_link, owners_link]) == {moved_link: "access_lost", owners_link: None}
    # What `link list` shows agrees with what the gateway enforces.
    states = {lk["id"]: lk["state"] for lk in links.list_links(catalog, people.owner)}
    assert states[moved_link] == "access_lost" and states[owners_link] != "access_lost"
    assert images.list_images(catalog, actor(catalog, "acme-viewer")) == []  # globex has none
    event = audit.list_events(catalog.engine, target="acme-viewer", action="account.set")[0]
    assert event["detail"] == {"tenant": ["acme", "globex"]}


# ---- SSH keys ----------------------------------------------------------------------------------


def test_an_owner_may_not_register_ssh_keys_on_another_account(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    error = refusal(add_key, catalog, people.owner, "acme-viewer", tmp_path)
    assert isinstance(error, Forbidden)
    assert str(error) == "only platform admins may register SSH keys on another account"
    error = refusal(add_key, catalog, people.owner, "globex-owner", tmp_path)
    assert isinstance(error, NotFound) and str(error) == "account globex-owner not found"
    with db.read_session(catalog.engine) as session:
        assert session.exec(select(AccountKey)).all() == []
    assert keys.list_keys(catalog, people.owner, "acme-viewer") == []  # seeing and removing stay allowed
    add_key(catalog, people.owner, "acme-owner", tmp_path)  # its own
    add_key(catalog, people.viewer, "acme-viewer", tmp_path)  # a member its own
    add_key(catalog, people.admin, "acme-manager", tmp_path)  # an admin anyone's
    assert [len(keys.list_keys(catalog, people.admin, n)) for n in ("acme-owner", "acme-viewer", "acme-manager")] == [
        1,
        1,
        1,
    ]


def test_a_deleted_accounts_key_opens_nothing(catalog: Catalog, people: People, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "k.pub"
    key.write_public_key(str(path))
    keys.add_key(catalog, people.admin, "acme-viewer", path)
    assert keys.account_for_key(catalog, key.public_data) == "acme-viewer"
    accounts.delete_account(catalog, people.admin, "acme-viewer")
    assert keys.account_for_key(catalog, key.public_data) is None
    keys.add_key(catalog, people.admin, "acme-owner", path)  # the key is free for another account


# ---- standings (what admin SSH sessions watch) -------------------------------------------------


def test_standings_change_with_perm_and_tenant_and_vanish_with_the_account(catalog: Catalog, people: People) -> None:
    start = accounts.standing_of(catalog, "acme-viewer")
    assert start is not None and start.perm == "view"
    ids = [start.account_id, people.owner.account_id]
    assert accounts.standings(catalog, ids)[start.account_id] == start
    accounts.set_account(catalog, people.admin, "acme-viewer", perm="manage")
    assert accounts.standings(catalog, ids)[start.account_id] != start
    accounts.delete_account(catalog, people.admin, "acme-viewer")
    assert set(accounts.standings(catalog, ids)) == {people.owner.account_id}
    assert accounts.standing_of(catalog, "acme-viewer") is None


# ---- the migration -----------------------------------------------------------------------------


@BACKENDS
def test_migration_0005_keeps_accounts_and_round_trips(catalog: Catalog, people: People) -> None:
    accounts.delete_account(catalog, people.admin, "acme-viewer")
    accounts.create_account(catalog, people.admin, "acme-viewer", tenant="acme", role="member")
    config = db.alembic_config(catalog.engine)
    command.downgrade(config, "0004")
    with catalog.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT name, role FROM account")).all())
    # The deleted row survives the downgrade under a name nobody can take, with no rights.
    assert rows["acme-viewer"] == "member" and rows[f"~deleted-{people.viewer.account_id}"] == "deleted"
    db.upgrade(catalog.engine)
    assert db.current_revision(catalog.engine) == db.head_revision()
    assert "acme-viewer" in names(catalog, people.admin) and "acme-owner" in names(catalog, people.admin)
    assert account_row(catalog, "acme-owner") is not None


def test_a_link_made_by_a_stale_actor_after_the_delete_opens_nothing(catalog: Catalog, people: People) -> None:
    """A process that resolved the account before it was deleted (an open TUI, a CLI mid-command)
    may still record a link: its maker is gone, so the gateway and `link list` refuse it alike."""
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="web", with_file=True)
    accounts.delete_account(catalog, people.admin, "acme-viewer")
    late = link_of(catalog, people.viewer, image_id)
    assert links.check_links(catalog, [late])[late] == "access_lost"
    assert links.get_link(catalog, people.owner, late)["state"] == "access_lost"
