"""Every role × operation × own/other tenant. Another tenant's image is "not found", never "forbidden"."""

from __future__ import annotations

import pytest

from core.accounts import accounts
from core.catalog.catalog import Catalog
from core.catalog.errors import Forbidden, NotFound
from core.catalog.models import Status
from core.images import images
from core.images.images import ImageQuery
from tests.conftest import BACKENDS, People
from tests.factories import image_row, make_image

pytestmark = BACKENDS

ROLES = ["admin", "owner", "manager", "viewer", "other_owner"]
# Who may see / change images of tenant acme.
SEES_ACME = {"admin", "owner", "manager", "viewer"}
CHANGES_ACME = {"admin", "owner", "manager"}


@pytest.fixture
def acme_images(catalog: Catalog, people: People) -> dict[str, str]:
    return {
        "available": make_image(catalog, people.owner, Status.AVAILABLE, name="acme-avail"),
        "deleted": make_image(catalog, people.owner, Status.DELETED, name="acme-deleted"),
    }


@pytest.mark.parametrize("role", ROLES)
def test_listing_shows_only_visible_tenants(catalog: Catalog, people: People, acme_images, role: str):
    globex = make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-avail")
    listed = {i["id"] for i in images.list_images(catalog, getattr(people, role))}
    expected = set()
    if role in SEES_ACME:
        expected.add(acme_images["available"])
    if role in ("admin", "other_owner"):
        expected.add(globex)
    assert listed == expected
    deleted = {i["id"] for i in images.list_images(catalog, getattr(people, role), ImageQuery(status="deleted"))}
    assert deleted == ({acme_images["deleted"]} if role in SEES_ACME else set())


@pytest.mark.parametrize("role", ROLES)
def test_show(catalog: Catalog, people: People, acme_images, role: str):
    actor = getattr(people, role)
    if role in SEES_ACME:
        assert images.get_image(catalog, actor, acme_images["available"])["tenant"] == "acme"
    else:
        with pytest.raises(NotFound, match="not found"):
            images.get_image(catalog, actor, acme_images["available"])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", ["edit", "delete", "restore", "destroy"])
def test_changes(catalog: Catalog, people: People, acme_images, role: str, operation: str):
    actor = getattr(people, role)
    target = acme_images["deleted" if operation in ("restore", "destroy") else "available"]
    before = image_row(catalog, target).model_dump()
    expected = None if role in CHANGES_ACME else (NotFound if role not in SEES_ACME else Forbidden)
    if operation == "edit":
        if expected is None:
            images.edit_image(catalog, actor, target, name="changed")
            assert image_row(catalog, target).name == "changed"
        else:
            with pytest.raises(expected):
                images.edit_image(catalog, actor, target, name="changed")
            assert image_row(catalog, target).model_dump() == before
        return
    run = {"delete": images.delete_images, "restore": images.restore_images, "destroy": images.destroy_images}
    (result,) = run[operation](catalog, actor, [target])
    if expected is None:
        assert result.ok, result.error
    else:
        assert not result.ok and result.exit_code == expected.exit_code
        assert image_row(catalog, target).model_dump() == before


def test_not_found_message_is_the_same_for_missing_and_foreign(catalog: Catalog, people: People, acme_images):
    with pytest.raises(NotFound) as foreign:
        images.get_image(catalog, people.other_owner, acme_images["available"])
    with pytest.raises(NotFound) as missing:
        images.get_image(catalog, people.other_owner, "img-aaaaaaaa")
    assert str(foreign.value).replace(acme_images["available"], "X") == str(missing.value).replace("img-aaaaaaaa", "X")


def test_listing_a_foreign_tenant_by_name_is_not_found(catalog: Catalog, people: People):
    with pytest.raises(NotFound):
        images.list_images(catalog, people.owner, ImageQuery(tenant="globex"))


@pytest.mark.parametrize("role", ROLES)
def test_tenant_creation_is_for_admins_only(catalog: Catalog, people: People, role: str):
    actor = getattr(people, role)
    if role == "admin":
        assert accounts.create_tenant(catalog, actor, "initech")["name"] == "initech"
    else:
        with pytest.raises(Forbidden):
            accounts.create_tenant(catalog, actor, "initech")
        assert "initech" not in {t["name"] for t in accounts.list_tenants(catalog, people.admin)}


@pytest.mark.parametrize("role", ROLES)
def test_sub_accounts(catalog: Catalog, people: People, role: str):
    actor = getattr(people, role)
    if role in ("admin", "owner"):
        created = accounts.create_account(catalog, actor, "acme-new", tenant="acme", role="member", perm="view")
        assert created["tenant"] == "acme" and created["perm"] == "view"
    else:
        expected = NotFound if role == "other_owner" else Forbidden
        with pytest.raises(expected):
            accounts.create_account(catalog, actor, "acme-new", tenant="acme", role="member", perm="view")


def test_owners_cannot_create_owners_or_admins(catalog: Catalog, people: People):
    with pytest.raises(Forbidden):
        accounts.create_account(catalog, people.owner, "acme-boss", tenant="acme", role="owner")
    with pytest.raises(Forbidden):
        accounts.create_account(catalog, people.owner, "root2", tenant=None, role="admin")


def test_account_listing_is_scoped(catalog: Catalog, people: People):
    names = lambda actor: {a["name"] for a in accounts.list_accounts(catalog, actor)}  # noqa: E731
    assert names(people.admin) >= {"admin", "acme-owner", "globex-owner"}
    assert names(people.owner) == {"acme-owner", "acme-manager", "acme-viewer"}
    assert names(people.viewer) == {"acme-viewer"}
