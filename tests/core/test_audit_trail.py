"""Who reads the audit trail and what each sees: platform admins all of it, a tenant's owner the events on
its tenant's images, VMs and links (never another tenant's, nor outsiders' refusals), members nothing;
filters by image, account and action; pages that never overlap; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from core.accounts.trail import read_trail, trail_actions
from core.catalog.catalog import Catalog
from core.catalog.errors import Forbidden, ImagehubError
from core.images.images import edit_image
from core.links.links import create_link, revoke_link
from tests.conftest import BACKENDS, People
from tests.tui.conftest import add_images

pytestmark = BACKENDS  # the tenant's trail is one SQL query: on SQLite and PostgreSQL alike


@pytest.fixture
def trail(catalog: Catalog, people: People) -> Catalog:
    add_images(catalog)
    edit_image(catalog, people.owner, "img-acme0001", description="edited by the owner")
    edit_image(catalog, people.manager, "img-acme0002", description="edited by the manager")
    link = create_link(catalog, people.owner, "img-acme0001").view
    revoke_link(catalog, people.owner, link["id"])
    edit_image(catalog, people.other_owner, "img-glbx0001", description="globex's own")
    with pytest.raises(ImagehubError):  # an outsider's refusal on an acme image
        edit_image(catalog, people.other_owner, "img-acme0002", description="not mine")
    return catalog


def test_admins_read_every_event(trail: Catalog, people: People) -> None:
    events = read_trail(trail, people.admin)
    actions = [e["action"] for e in events]
    assert "account.create" in actions and "tenant.create" in actions
    assert {"img-glbx0001", "img-acme0001"} <= {e["target"] for e in events}
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)  # newest first


def test_an_owner_reads_its_tenants_trail_only(trail: Catalog, people: People) -> None:
    events = read_trail(trail, people.owner)
    targets = {e["target"] for e in events}
    assert {"img-acme0001", "img-acme0002"} <= targets
    assert "img-glbx0001" not in targets
    assert not [e for e in events if e["action"].startswith(("account.", "tenant."))]
    assert not [e for e in events if e["actor"] == "globex-owner"]  # its refusal names another tenant's account
    assert {"link.create", "link.revoke", "image.edit"} <= set(trail_actions(trail, people.owner))
    assert "tenant.create" not in trail_actions(trail, people.owner)
    other = read_trail(trail, people.other_owner)
    assert {e["target"] for e in other} == {"img-glbx0001"}


@pytest.mark.parametrize("who", ["manager", "viewer"])
def test_members_are_refused(trail: Catalog, people: People, who: str) -> None:
    with pytest.raises(Forbidden) as refused:
        read_trail(trail, getattr(people, who))
    assert str(refused.value) == "only platform admins and tenant owners may read the audit trail"
    with pytest.raises(Forbidden):
        trail_actions(trail, getattr(people, who))


def test_filters_by_image_account_and_action(trail: Catalog, people: People) -> None:
    by_image = read_trail(trail, people.owner, image="img-acme0002")
    assert by_image and {e["target"] for e in by_image} == {"img-acme0002"}
    assert {e["target"] for e in read_trail(trail, people.owner, image="img-acme000")} >= {
        "img-acme0001",
        "img-acme0002",
    }
    by_manager = read_trail(trail, people.owner, account="acme-manager")
    assert [e["action"] for e in by_manager] == ["image.edit"]
    about = read_trail(trail, people.admin, account="acme-viewer")  # by it, or about it (its creation)
    assert [(e["action"], e["target"]) for e in about] == [("account.create", "acme-viewer")]
    revokes = read_trail(trail, people.owner, action="link.revoke")
    assert [e["action"] for e in revokes] == ["link.revoke"]
    assert read_trail(trail, people.owner, image="img-acme0002", action="link.revoke") == []
    assert read_trail(trail, people.owner, image="img_acme%") == []  # typed text, not a pattern


def test_pages_follow_each_other_without_overlap(trail: Catalog, people: People) -> None:
    everything = read_trail(trail, people.admin)
    first = read_trail(trail, people.admin, limit=3)
    second = read_trail(trail, people.admin, limit=3, before_id=first[-1]["id"])
    assert first + second == everything[:6]
