"""Who may see and change what. Decided here only; faces call these and never re-decide.

- admin: every tenant, every change, tenants and accounts.
- owner (a tenant's main account): its tenant, every change, sub-accounts of its tenant.
- member with `view`: sees its tenant; with `manage`: changes it too.
A resource of another tenant is "not found", never "forbidden", so IDs cannot be probed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, col

from core.catalog import db
from core.catalog.errors import Forbidden, Msg, NotFound
from core.catalog.models import Account, Image, Link, Role, Tenant, Vm
from core.rules.actor import Actor as Actor
from core.rules.actor import find_actor, visible_tenant_id
from core.rules.actor import visible_tenant_ids as visible_tenant_ids

# The rows a tenant owns, loaded by id through `load_visible`.
TenantRow = TypeVar("TenantRow", Image, Vm, Link)


def actor_of(account: Account) -> Actor:
    assert account.id is not None
    return Actor(account.id, account.name, account.role, account.perm, account.tenant_id)


def resolve_actor(session: Session, name: str) -> Actor:
    """The live account called `name` (a deleted one acts no more)."""
    return find_actor(db.rows_in(session), name)


def refresh_actor(session: Session, actor: Actor) -> Actor:
    """The actor as the catalog has it now (inside a write transaction): deleted or changed since
    it was resolved, its current rights decide."""
    account = session.get(Account, actor.account_id)
    if account is None or account.deleted_at is not None:
        raise Forbidden("account {name} does not exist", name=actor.name)
    return actor_of(account)


def require_visible(actor: Actor, tenant_id: int, what: str) -> None:
    if not actor.sees_tenant(tenant_id):
        raise NotFound("{what} not found", what=what)


def sees_row(actor: Actor, row: Image | Vm | Link) -> bool:
    """A row of no tenant (an admin's workbook link of every tenant) is seen by platform admins only."""
    return actor.is_admin if row.tenant_id is None else actor.sees_tenant(row.tenant_id)


def _not_found(model: type[Image | Vm | Link], row_id: str) -> NotFound:
    if model is Image:
        return NotFound("image {image_id} not found", image_id=row_id)
    if model is Vm:
        return NotFound("vm {vm_id} not found", vm_id=row_id)
    return NotFound("link {link_id} not found", link_id=row_id)


def load_visible(session: Session, actor: Actor, model: type[TenantRow], row_id: str) -> TenantRow:
    """The row `row_id` of `model` if the actor sees its tenant; else NotFound, whether it is missing
    or another tenant's (the two are never told apart)."""
    row = session.get(model, row_id)
    if row is None or not sees_row(actor, row):
        raise _not_found(model, row_id)
    return row


def load_visible_tenant(session: Session, actor: Actor, name: str) -> Tenant:
    """The tenant called `name` if the actor sees it; else NotFound."""
    tenant = session.get(Tenant, visible_tenant_id(db.rows_in(session), actor, name))
    assert tenant is not None
    return tenant


def require_manage(actor: Actor, tenant_id: int, what: str) -> None:
    """Visible (else NotFound) and changeable by the actor (else Forbidden)."""
    require_visible(actor, tenant_id, what)
    if not actor.can_manage:
        raise Forbidden("account {actor_name} may view but not change {what}", actor_name=actor.name, what=what)


def audit_scope(actor: Actor) -> int | None:
    """Which audit trail the actor reads: None, all of it (platform admins); its tenant's id, that
    tenant's trail (its owner: core.catalog.audit.tenant_scope); anyone else is refused."""
    if actor.is_admin:
        return None
    if actor.role == Role.OWNER and actor.tenant_id is not None:
        return actor.tenant_id
    raise Forbidden("only platform admins and tenant owners may read the audit trail")


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


def account_listing_filter(actor: Actor) -> Any:
    """Which accounts `account list` shows: admins every one, an owner its tenant's, a member itself.
    None: no filter."""
    if actor.is_admin:
        return None
    if actor.role == Role.OWNER:
        return col(Account.tenant_id) == actor.tenant_id
    return col(Account.id) == actor.account_id


def require_may_create_account(actor: Actor, role: str, tenant_id: int | None) -> None:
    """Admins create every account; a tenant's owner the members of its own tenant."""
    if role == Role.ADMIN:
        require_admin(actor, Msg("create platform admins"))
    elif role == Role.OWNER:
        require_admin(actor, Msg("create tenant owners"))
    else:
        require_account_admin(actor, tenant_id, Msg("create accounts in this tenant"))


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


def require_may_manage_keys(actor: Actor, account: Account, *, registering: bool = False) -> None:
    """Whose keys the actor may see or remove: its own, an owner its tenant's accounts', an admin
    everyone's; `registering`, add to: its own, an admin any. Not visible: NotFound."""
    if not account_visible(actor, account):
        raise NotFound("account {name} not found", name=account.name)
    if registering:
        require_key_registration(actor, account)
    if actor.is_admin or actor.account_id == account.id:
        return
    require_account_admin(actor, account.tenant_id, Msg("manage the keys of {name}", name=account.name))


def require_key_registration(actor: Actor, account: Account) -> None:
    """A key logs in as its account: only the account itself and platform admins register one, so an
    owner cannot log in as (and act in the audit trail as) one of its members."""
    if actor.is_admin or actor.account_id == account.id:
        return
    raise Forbidden("only platform admins may {doing}", doing=Msg("register SSH keys on another account"))


# ---- download links -----------------------------------------------------------------------------


def require_may_revoke_link(actor: Actor, link: Link) -> None:
    """A link is revoked by its maker, or by anyone who may manage its tenant (visible: load_visible)."""
    if link.account_id != actor.account_id and not actor.can_manage:
        raise Forbidden("account {actor_name} may not revoke link {link_id}", actor_name=actor.name, link_id=link.id)


def maker_sees(maker: Account | None, tenant_id: int | None) -> bool:
    """Whether the account that made a link still sees what the link serves: it is live and sees
    `tenant_id`, or (None: a workbook of every tenant) is a platform admin."""
    if maker is None or maker.deleted_at is not None:
        return False
    made_by = actor_of(maker)
    return made_by.is_admin if tenant_id is None else made_by.sees_tenant(tenant_id)
