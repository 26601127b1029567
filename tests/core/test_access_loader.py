"""One loader decides "this row, if the actor sees it, else not found" (core.rules.access.load_visible),
and the permission rules on accounts, keys and links are named functions of core.rules.access: the
services call them, and no other module raises NotFound after a visibility check of its own."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest

from core.accounts import accounts, keys
from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.errors import Forbidden, NotFound
from core.catalog.models import Account, Image, Link, Role, Status, Vm
from core.compute import capture, vms
from core.images import images
from core.images.images import ImageQuery
from core.links import links
from core.rules import access
from core.rules.access import Actor
from tests.conftest import People
from tests.factories import attach_vm, make_image

CORE = Path(__file__).resolve().parents[2] / "core"
ACCESS = CORE / "rules" / "access.py"
# Its half without the ORM (the Actor, the tenants it sees), read by the command line's listing path too.
ACTOR = CORE / "rules" / "actor.py"


def make_link(catalog: Catalog, maker: Actor, image_id: str | None, link_id: str) -> str:
    """A link row as create_link records it (a workbook of every tenant when `image_id` is None)."""
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id) if image_id else None
        now = utcnow()
        session.add(
            Link(
                id=link_id,
                kind="download" if image_id else "workbook",
                image_id=image_id,
                tenant_id=image.tenant_id if image is not None else maker.tenant_id,
                account_id=maker.account_id,
                format="raw" if image_id else "xlsx",
                filename="f",
                token_hash=link_id,
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    return link_id


@pytest.fixture
def acme_rows(catalog: Catalog, people: People) -> dict[type, str]:
    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="acme-row")
    return {
        Image: image_id,
        Vm: attach_vm(catalog, image_id),
        Link: make_link(catalog, people.owner, image_id, "lnk-owners"),
    }


MESSAGES = {Image: "image {} not found", Vm: "vm {} not found", Link: "link {} not found"}


@pytest.mark.parametrize("model", [Image, Vm, Link], ids=["image", "vm", "link"])
def test_another_tenants_row_and_a_missing_one_are_the_same_not_found(
    catalog: Catalog, people: People, acme_rows: dict[type, str], model: type
) -> None:
    row_id = acme_rows[model]
    with db.read_session(catalog.engine) as session:
        for who in (people.admin, people.owner, people.viewer):
            assert access.load_visible(session, who, model, row_id).id == row_id
        for row in (row_id, "nope-0000"):
            with pytest.raises(NotFound) as caught:
                access.load_visible(session, people.other_owner, model, row)
            assert str(caught.value) == MESSAGES[model].format(row) and caught.value.exit_code == 3


def test_a_link_of_no_tenant_is_seen_by_platform_admins_only(catalog: Catalog, people: People) -> None:
    everyone = make_link(catalog, people.admin, None, "lnk-everyone")
    with db.read_session(catalog.engine) as session:
        assert access.load_visible(session, people.admin, Link, everyone).tenant_id is None
        with pytest.raises(NotFound, match=f"^link {everyone} not found$"):
            access.load_visible(session, people.owner, Link, everyone)


def test_the_services_answer_another_tenants_rows_with_the_loaders_not_found(
    catalog: Catalog, people: People, acme_rows: dict[type, str]
) -> None:
    other = people.other_owner
    image_id, vm_id, link_id = acme_rows[Image], acme_rows[Vm], acme_rows[Link]
    refusals = [
        (lambda: images.get_image(catalog, other, image_id), f"image {image_id} not found"),
        (lambda: links.create_link(catalog, other, image_id), f"image {image_id} not found"),
        (lambda: links.get_link(catalog, other, link_id), f"link {link_id} not found"),
        (lambda: links.revoke_link(catalog, other, link_id), f"link {link_id} not found"),
        (lambda: vms.list_vms(catalog, other, image_id), f"image {image_id} not found"),
        (lambda: vms.get_vm(catalog, other, vm_id), f"vm {vm_id} not found"),
        (lambda: vms.delete_vm(catalog, other, vm_id), f"vm {vm_id} not found"),
        (lambda: capture.submit_capture(catalog, other, vm_id, "copy"), f"vm {vm_id} not found"),
        (lambda: images.list_images(catalog, other, ImageQuery(tenant="acme")), "tenant acme not found"),
    ]
    for call, message in refusals:
        with pytest.raises(NotFound) as caught:
            call()
        assert str(caught.value) == message


# ---- the permission rules, by name ---------------------------------------------------------------


def account(catalog: Catalog, name: str) -> Account:
    with db.read_session(catalog.engine) as session:
        row = session.get(Account, access.resolve_actor(session, name).account_id)
        assert row is not None
        return row


def test_who_may_revoke_a_link(catalog: Catalog, people: People, acme_rows: dict[type, str]) -> None:
    with db.read_session(catalog.engine) as session:
        made_by_owner = session.get(Link, acme_rows[Link])
    assert made_by_owner is not None
    for who in (people.admin, people.owner, people.manager):
        access.require_may_revoke_link(who, made_by_owner)
    with pytest.raises(Forbidden) as caught:
        access.require_may_revoke_link(people.viewer, made_by_owner)
    assert str(caught.value) == f"account acme-viewer may not revoke link {made_by_owner.id}"
    viewers = make_link(catalog, people.viewer, acme_rows[Image], "lnk-viewers")
    with db.read_session(catalog.engine) as session:
        own = session.get(Link, viewers)
    assert own is not None
    access.require_may_revoke_link(people.viewer, own)  # its own link, though it may only view


def test_who_may_create_which_account(people: People) -> None:
    acme = people.owner.tenant_id
    access.require_may_create_account(people.admin, Role.ADMIN, None)
    access.require_may_create_account(people.admin, Role.OWNER, acme)
    access.require_may_create_account(people.owner, Role.MEMBER, acme)
    refused = [
        (people.owner, Role.ADMIN, None, "only platform admins may create platform admins"),
        (people.owner, Role.OWNER, acme, "only platform admins may create tenant owners"),
        (people.manager, Role.MEMBER, acme, "account acme-manager may not create accounts in this tenant"),
        (people.other_owner, Role.MEMBER, acme, "account globex-owner may not create accounts in this tenant"),
    ]
    for who, role, tenant_id, message in refused:
        with pytest.raises(Forbidden) as caught:
            access.require_may_create_account(who, role, tenant_id)
        assert str(caught.value) == message


def test_whose_keys_an_account_may_manage_and_register(catalog: Catalog, people: People) -> None:
    viewer, owner = account(catalog, "acme-viewer"), account(catalog, "acme-owner")
    access.require_may_manage_keys(people.viewer, viewer, registering=True)  # its own
    access.require_may_manage_keys(people.owner, viewer)  # an owner sees and removes its members' keys
    access.require_may_manage_keys(people.admin, owner, registering=True)
    with pytest.raises(Forbidden, match="^only platform admins may register SSH keys on another account$"):
        access.require_may_manage_keys(people.owner, viewer, registering=True)
    with pytest.raises(Forbidden, match="^account acme-viewer may not manage the keys of acme-owner$"):
        access.require_may_manage_keys(people.viewer, owner)
    with pytest.raises(NotFound, match="^account acme-viewer not found$"):
        access.require_may_manage_keys(people.other_owner, viewer)
    # and the services say the same
    with pytest.raises(NotFound, match="^account acme-viewer not found$"):
        keys.list_keys(catalog, people.other_owner, "acme-viewer")
    with pytest.raises(NotFound, match="^tenant acme not found$"):
        accounts.create_account(catalog, people.other_owner, "sneaky", tenant="acme", role="member")


# ---- no visibility check by hand outside core.rules.access -----------------------------------------

VISIBILITY = {"sees_tenant", "sees_row", "account_visible", "visible_tenant_ids", "maker_sees"}


def _raises_not_found(node: ast.If) -> bool:
    for statement in node.body:
        if isinstance(statement, ast.Raise) and isinstance(statement.exc, ast.Call):
            func = statement.exc.func
            if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) == "NotFound":
                return True
    return False


def _checks_visibility(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and node.attr in VISIBILITY | {"is_admin", "can_manage"}:
            return True
        if isinstance(node, ast.Name) and node.id in VISIBILITY | {"visible"}:
            return True
    return False


def test_no_module_but_access_raises_not_found_after_a_visibility_check_of_its_own() -> None:
    by_hand = []
    for path in sorted(CORE.rglob("*.py")):
        if path in (ACCESS, ACTOR):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.If) and _checks_visibility(node.test) and _raises_not_found(node):
                by_hand.append(f"{path.relative_to(CORE.parent)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("sees_tenant", "account_visible"):
                by_hand.append(f"{path.relative_to(CORE.parent)}:{node.lineno} ({node.attr})")
    assert by_hand == [], "decide visibility in core.rules.access (load_visible and friends)"


@pytest.mark.parametrize(
    "module", ["images/images.py", "links/links.py", "compute/vms.py", "compute/capture.py", "accounts/keys.py"]
)
def test_the_services_load_rows_through_access(module: str) -> None:
    tree = ast.parse((CORE / module).read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "access"
    }
    assert called & {"load_visible", "require_may_manage_keys"}, called
