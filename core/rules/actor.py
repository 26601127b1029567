"""The caller (an account) as every rule sees it, how it is found by name, and which tenants it sees.

The part of core.rules.access that needs no ORM: plain Python and SQL text (core.catalog.reader).
core.rules.access runs these queries through SQLAlchemy, the command line's listing path through
sqlite3, so that both decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.catalog.errors import Forbidden, NotFound
from core.catalog.reader import Rows
from core.catalog.vocabulary import Perm, Role


@dataclass(frozen=True)
class Actor:
    account_id: int
    name: str
    role: str
    perm: str | None
    tenant_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def can_manage(self) -> bool:
        return self.role in (Role.ADMIN, Role.OWNER) or self.perm == Perm.MANAGE

    def sees_tenant(self, tenant_id: int) -> bool:
        return self.is_admin or self.tenant_id == tenant_id


def visible_tenant_ids(actor: Actor) -> set[int] | None:
    """None means every tenant."""
    if actor.is_admin:
        return None
    return {actor.tenant_id} if actor.tenant_id is not None else set()


# The live account called :name (a deleted one acts no more).
ACTOR_QUERY = "SELECT id, name, role, perm, tenant_id FROM account WHERE name = :name AND deleted_at IS NULL"


TENANT_QUERY = "SELECT id FROM tenant WHERE name = :name"


def visible_tenant_id(rows: Rows, actor: Actor, name: str) -> int:
    """The ID of the tenant called `name` if the actor sees it; else NotFound, whether it is missing or
    another's (the two are never told apart)."""
    found = rows(TENANT_QUERY, {"name": name})
    if not found or not actor.sees_tenant(found[0][0]):
        raise NotFound("tenant {tenant} not found", tenant=name)
    return int(found[0][0])


def find_actor(rows: Rows, name: str) -> Actor:
    found = rows(ACTOR_QUERY, {"name": name})
    if not found:
        raise Forbidden("account {name} does not exist", name=name)
    account_id, account_name, role, perm, tenant_id = found[0]
    return Actor(account_id, account_name, role, perm, tenant_id)
