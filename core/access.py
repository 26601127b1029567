"""Who may see and change what. Decided here only; faces call these and never re-decide.

- admin: every tenant, every change, tenants and accounts.
- owner (a tenant's main account): its tenant, every change, sub-accounts of its tenant.
- member with `view`: sees its tenant; with `manage`: changes it too.
A resource of another tenant is "not found", never "forbidden", so IDs cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from core.errors import Forbidden, NotFound
from core.models import Account, Perm, Role


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


def resolve_actor(session: Session, name: str) -> Actor:
    account = session.exec(select(Account).where(Account.name == name)).first()
    if account is None:
        raise Forbidden("account {name} does not exist", name=name)
    assert account.id is not None
    return Actor(account.id, account.name, account.role, account.perm, account.tenant_id)


def visible_tenant_ids(actor: Actor) -> set[int] | None:
    """None means every tenant."""
    if actor.is_admin:
        return None
    return {actor.tenant_id} if actor.tenant_id is not None else set()


def require_visible(actor: Actor, tenant_id: int, what: str) -> None:
    if not actor.sees_tenant(tenant_id):
        raise NotFound("{what} not found", what=what)


def require_manage(actor: Actor, tenant_id: int, what: str) -> None:
    """Visible (else NotFound) and changeable by the actor (else Forbidden)."""
    require_visible(actor, tenant_id, what)
    if not actor.can_manage:
        raise Forbidden("account {actor_name} may view but not change {what}", actor_name=actor.name, what=what)


def require_admin(actor: Actor, doing: str) -> None:
    if not actor.is_admin:
        raise Forbidden("only platform admins may {doing}", doing=doing)


def require_account_admin(actor: Actor, tenant_id: int | None, doing: str) -> None:
    """Admins manage all accounts; a tenant's owner manages the sub-accounts of its tenant."""
    if actor.is_admin:
        return
    if actor.role == Role.OWNER and tenant_id is not None and tenant_id == actor.tenant_id:
        return
    raise Forbidden("account {actor_name} may not {doing}", actor_name=actor.name, doing=doing)
