"""`imagehub audit list` reads the trail core lets the account read: platform admins all of it, a
tenant owner its tenant's (events on its images), anyone else is refused; the filters narrow it."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def trail(cli: Any, config_path: Any) -> dict[str, str]:
    """Two tenants, each with an image that its owner then moved to the bin (two audited events)."""
    from core.accounts.accounts import create_account, create_tenant
    from core.catalog.settings import load_settings
    from core.images.images import delete_images
    from core.setup.bootstrap import initialise
    from tests.conftest import actor
    from tests.factories import make_image

    catalog, _ = initialise(load_settings(config_path))
    try:
        admin = actor(catalog, "admin")
        made: dict[str, str] = {}
        for tenant in ("acme", "globex"):
            create_tenant(catalog, admin, tenant)
            create_account(catalog, admin, f"{tenant}-owner", tenant=tenant, role="owner")
            create_account(catalog, admin, f"{tenant}-member", tenant=tenant, role="member", perm="manage")
            owner = actor(catalog, f"{tenant}-owner")
            made[tenant] = make_image(catalog, owner, name=f"{tenant}-web")
            delete_images(catalog, owner, [made[tenant]])
        return made
    finally:
        catalog.dispose()


def targets(done: Any) -> set[str]:
    assert done.code == 0, done.err
    return {event["target"] for event in done.json()}


def test_an_owner_reads_its_tenants_trail_and_an_admin_all(cli: Any, trail: dict[str, str]) -> None:
    mine = targets(cli("audit", "list", "--json", account="acme-owner"))
    assert trail["acme"] in mine and trail["globex"] not in mine
    everything = targets(cli("audit", "list", "--json"))
    assert {trail["acme"], trail["globex"]} <= everything


def test_a_member_is_refused_with_the_reason(cli: Any, trail: dict[str, str]) -> None:
    done = cli("audit", "list", account="acme-member")
    assert done.code == 4
    assert done.err == "imagehub: error: only platform admins and tenant owners may read the audit trail\n"


def test_filters_by_image_account_and_action(cli: Any, trail: dict[str, str]) -> None:
    by_image = cli("audit", "list", "--image", trail["globex"][:-2], "--json").json()
    assert by_image and {e["target"] for e in by_image} == {trail["globex"]}
    by_account = cli("audit", "list", "--account", "globex-own", "--json").json()
    assert by_account and all("globex-owner" in (e["actor"], e["target"]) for e in by_account)
    deletes = cli("audit", "list", "--action", "image.delete", "--json", account="acme-owner").json()
    assert [(e["action"], e["target"]) for e in deletes] == [("image.delete", trail["acme"])]
    refused = cli("audit", "list", "--limit", "0")
    message = "imagehub: error: argument --limit: 0 is out of range; choose 1 to 1000000000000\n"
    assert (refused.code, refused.err) == (2, message)
