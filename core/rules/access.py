"""Who may see and change what. Decided here only; faces call these and never re-decide.

- admin: every tenant, every change, tenants and accounts.
- owner (a tenant's main account): its tenant, every change, sub-accounts of its tenant.
- member with `view`: sees its tenant; with `manage`: changes it too.
A resource of another tenant is "not found", never "forbidden", so IDs cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from core.catalog.errors import Forbidden, Msg, NotFound
from core.catalog.models import Account, Perm, Role


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


def actor_of(account: Account) -> Actor:
    assert account.id is not None
    return Actor(account.id, account.name, account.role, account.perm, account.tenant_id)


def resolve_actor(session: Session, name: str) -> Actor:
    """The live account called `name` (a deleted one acts no more)."""
    account = session.exec(select(Account).where(Account.name == name, col(Account.deleted_at).is_(None))).first()
    if account is None:
        raise Forbidden("account {name} does not exist", name=name)
    return actor_of(account)


def refresh_actor(session: Session, actor: Actor) -> Actor:
    """The actor as the catalog has it now (inside a write transaction): deleted or changed since
    it was resolved, its current rights decide."""
    account = session.get(Account, actor.account_id)
    if account is None or account.deleted_at is not None:
        raise Forbidden("account {name} does not exist", name=actor.name)
    return actor_of(account)


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


# ---- acting on accounts -------------------------------------------------------------------------


def account_visible(actor: Actor, account: Account) -> bool:
    """Admins see every account; anyone else the accounts of their own tenant."""
    return actor.is_admin or (account.tenant_id is not None and account.tenant_id == actor.tenant_id)


def require_account_change(actor: Actor, account: Account, doing: str) -> None:
    """Visible (else NotFound, as if it did not exist) and changeable by the actor (else Forbidden).

    Admins change (and delete) every account; a tenant's owner the members of its tenant, never an
    owner (itself included); members no account."""
    if not account_visible(actor, account):
        raise NotFound("account {name} not found", name=account.name)
    if actor.is_admin or (actor.role == Role.OWNER and account.role == Role.MEMBER):
        return
    if actor.role == Role.OWNER:
        raise Forbidden("only platform admins may {doing}: {name} is a tenant owner", doing=doing, name=account.name)
    raise Forbidden("account {actor_name} may not {doing}", actor_name=actor.name, doing=doing)


def require_account_move(actor: Actor) -> None:
    """Only platform admins move accounts between tenants (an owner would hand its member away)."""
    require_admin(actor, Msg("move accounts between tenants"))


def require_key_registration(actor: Actor, account: Account) -> None:
    """A key logs in as its account: only the account itself and platform admins register one, so an
    owner cannot log in as (and act in the audit trail as) one of its members."""
    if actor.is_admin or actor.account_id == account.id:
        return
    raise Forbidden("only platform admins may {doing}", doing=Msg("register SSH keys on another account"))
