"""Tenants and accounts: who exists, which tenant they belong to, and what they may do.

An account's lifecycle: created, changed (`set_account`: a member's perm; an admin moves an account
to another tenant), deleted (`delete_account`). A deleted account keeps its row with `deleted_at`
(links and history still name it), its keys are removed and its links revoked at once, and its name
may be given to a new account. Open admin SSH sessions watch `standings` and end when their
account's standing (tenant, role, perm) changes or the account is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import iso, utcnow
from core.catalog.errors import Conflict, ImagehubError, Invalid, Msg, NotFound
from core.catalog.models import Account, AccountKey, Perm, Role, Tenant
from core.links import links
from core.rules import access
from core.rules.access import Actor

LIVE = col(Account.deleted_at).is_(None)


def _check_identifier(kind: str, value: str) -> str:
    name = value.strip()
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise Invalid(
            "{kind} name {value!r} is invalid; use 1 to 64 letters, digits, '-', '_' or '.'", kind=kind, value=value
        )
    return name


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": iso(tenant.created_at)}


def account_view(account: Account, tenant_name: str | None) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "tenant": tenant_name,
        "role": account.role,
        "perm": account.perm,
        "created_at": iso(account.created_at),
    }


def create_tenant(catalog: Catalog, actor: Actor, name: str) -> dict[str, Any]:
    try:
        access.require_admin(actor, Msg("create tenants"))
        name = _check_identifier("tenant", name)
        with db.write_session(catalog.engine) as session:
            if session.exec(select(Tenant).where(Tenant.name == name)).first() is not None:
                raise Conflict("tenant {name} already exists", name=name)
            tenant = Tenant(name=name)
            session.add(tenant)
            session.flush()
            audit.record(session, actor.name, "tenant.create", name)
            return tenant_view(tenant)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "tenant.create", name, str(exc))
        raise


def list_tenants(catalog: Catalog, actor: Actor) -> list[dict[str, Any]]:
    with db.read_session(catalog.engine) as session:
        statement = select(Tenant).order_by(Tenant.name)
        visible = access.visible_tenant_ids(actor)
        if visible is not None:
            statement = statement.where(col(Tenant.id).in_(visible))
        return [tenant_view(t) for t in session.exec(statement)]


def create_account(
    catalog: Catalog, actor: Actor, name: str, *, tenant: str | None, role: str, perm: str | None = None
) -> dict[str, Any]:
    try:
        name = _check_identifier("account", name)
        if role not in (Role.OWNER, Role.MEMBER, Role.ADMIN):
            raise Invalid("role {role} is unknown; choose one of owner, member, admin", role=role)
        if role == Role.MEMBER:
            perm = perm or Perm.VIEW
            if perm not in (Perm.VIEW, Perm.MANAGE):
                raise Invalid("perm {perm} is unknown; choose one of view, manage", perm=perm)
        elif perm is not None:
            raise Invalid("--perm applies to members only (owners and admins manage everything they see)")
        with db.write_session(catalog.engine) as session:
            tenant_id: int | None = None
            if role == Role.ADMIN:
                if tenant:
                    raise Invalid("platform admins belong to no tenant; leave out --tenant")
            else:
                if not tenant:
                    raise Invalid("--tenant is required for owners and members")
                tenant_id = access.load_visible_tenant(session, actor, tenant).id
            access.require_may_create_account(actor, role, tenant_id)
            if session.exec(select(Account).where(Account.name == name, LIVE)).first() is not None:
                raise Conflict("account {name} already exists", name=name)
            account = Account(name=name, tenant_id=tenant_id, role=role, perm=perm if role == Role.MEMBER else None)
            session.add(account)
            session.flush()
            audit.record(session, actor.name, "account.create", name, role=role, perm=perm, tenant=tenant)
            return account_view(account, tenant)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "account.create", name, str(exc))
        raise


def list_accounts(catalog: Catalog, actor: Actor) -> list[dict[str, Any]]:
    with db.read_session(catalog.engine) as session:
        statement = (
            select(Account, Tenant.name)
            .join(Tenant, col(Account.tenant_id) == col(Tenant.id), isouter=True)
            .where(LIVE)
            .order_by(Account.name)
        )
        only = access.account_listing_filter(actor)
        if only is not None:
            statement = statement.where(only)
        return [account_view(a, t) for a, t in session.exec(statement)]


def _live_account(session: Session, name: str) -> Account:
    account = session.exec(select(Account).where(Account.name == name, LIVE)).first()
    if account is None:
        raise NotFound("account {name} not found", name=name)
    return account


def _tenant_name(session: Session, tenant_id: int | None) -> str | None:
    tenant = session.get(Tenant, tenant_id) if tenant_id is not None else None
    return tenant.name if tenant is not None else None


def delete_account(catalog: Catalog, actor: Actor, name: str) -> dict[str, Any]:
    """Delete an account: its keys go, its links are revoked (transfers cut within seconds) and its
    admin SSH sessions end; its images stay with the tenant and the audit trail keeps its name."""
    try:
        with db.write_session(catalog.engine) as session:
            actor = access.refresh_actor(session, actor)
            account = _live_account(session, name)
            access.require_account_change(actor, account, Msg("delete account {name}", name=name))
            if account.id == actor.account_id:
                raise Conflict("account {name} cannot delete itself; another platform admin may", name=name)
            if account.role == Role.ADMIN:
                # Locked rows: two admins deleting each other at once cannot leave none (PostgreSQL).
                admins = session.exec(select(Account.id).where(Account.role == Role.ADMIN, LIVE).with_for_update())
                if len(admins.all()) <= 1:
                    raise Conflict("account {name} is the last platform admin; create another one first", name=name)
            now = utcnow()
            account.deleted_at = now
            session.add(account)
            removed = session.exec(delete(AccountKey).where(col(AccountKey.account_id) == account.id))
            assert account.id is not None
            revoked = links.revoke_links_of(session, account.id, now)
            tenant = _tenant_name(session, account.tenant_id)
            audit.record(session, actor.name, "account.delete", name, tenant=tenant, role=account.role,
                         keys_removed=removed.rowcount, links_revoked=revoked)  # fmt: skip
            view = account_view(account, tenant)
            view.update(deleted_at=iso(now), keys_removed=removed.rowcount, links_revoked=revoked)
            return view
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "account.delete", name, str(exc))
        raise


def set_account(
    catalog: Catalog, actor: Actor, name: str, *, perm: str | None = None, tenant: str | None = None
) -> dict[str, Any]:
    """Change a member's perm (`view`/`manage`) and/or move an account to another tenant (admins only).

    A moved account's links to its old tenant stop working (`access_lost`), and its admin SSH
    sessions end (they were opened with the old rights)."""
    try:
        if perm is None and tenant is None:
            raise Invalid("nothing to change; give --perm or --tenant")
        if perm is not None and perm not in (Perm.VIEW, Perm.MANAGE):
            raise Invalid("perm {perm} is unknown; choose one of view, manage", perm=perm)
        with db.write_session(catalog.engine) as session:
            actor = access.refresh_actor(session, actor)
            account = _live_account(session, name)
            access.require_account_change(actor, account, Msg("change account {name}", name=name))
            changes: dict[str, Any] = {}
            if tenant is not None:
                access.require_account_move(actor)
                if account.role == Role.ADMIN:
                    raise Invalid("platform admins belong to no tenant; leave out --tenant")
                target = session.exec(select(Tenant).where(Tenant.name == tenant)).first()
                if target is None:
                    raise NotFound("tenant {tenant} not found", tenant=tenant)
                if target.id != account.tenant_id:
                    changes["tenant"] = [_tenant_name(session, account.tenant_id), tenant]
                    account.tenant_id = target.id
            if perm is not None:
                if account.role != Role.MEMBER:
                    raise Invalid("--perm applies to members only (owners and admins manage everything they see)")
                if perm != account.perm:
                    changes["perm"] = [account.perm, perm]
                    account.perm = perm
            if changes:
                session.add(account)
                audit.record(session, actor.name, "account.set", name, **changes)
            return account_view(account, _tenant_name(session, account.tenant_id))
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "account.set", name, str(exc))
        raise


@dataclass(frozen=True)
class Standing:
    """The rights a session was opened with; a session whose account's standing differs (or whose
    account is gone) must end."""

    account_id: int
    tenant_id: int | None
    role: str
    perm: str | None


def _standing(account: Account) -> Standing:
    assert account.id is not None
    return Standing(account.id, account.tenant_id, account.role, account.perm)


def standing_of(catalog: Catalog, name: str) -> Standing | None:
    """The live account `name`'s standing, or None."""
    with db.read_session(catalog.engine) as session:
        account = session.exec(select(Account).where(Account.name == name, LIVE)).first()
        return _standing(account) if account is not None else None


def standings(catalog: Catalog, account_ids: Iterable[int]) -> dict[int, Standing]:
    """Current standings of the live accounts among `account_ids` (one query; absent: deleted)."""
    ids = set(account_ids)
    if not ids:
        return {}
    with db.read_session(catalog.engine) as session:
        rows = session.exec(select(Account).where(col(Account.id).in_(ids), LIVE))
        return {s.account_id: s for s in map(_standing, rows)}
