"""Tenants and accounts: who exists, which tenant they belong to, and what they may do."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from core import access, audit, db
from core.access import Actor
from core.catalog import Catalog
from core.clock import iso
from core.errors import Conflict, ImagehubError, Invalid, Msg, NotFound
from core.models import Account, Perm, Role, Tenant


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
                access.require_admin(actor, Msg("create platform admins"))
            else:
                if not tenant:
                    raise Invalid("--tenant is required for owners and members")
                found = session.exec(select(Tenant).where(Tenant.name == tenant)).first()
                if found is None or not actor.sees_tenant(found.id or -1):
                    raise NotFound("tenant {tenant} not found", tenant=tenant)
                tenant_id = found.id
                if role == Role.OWNER:
                    access.require_admin(actor, Msg("create tenant owners"))
                else:
                    access.require_account_admin(actor, tenant_id, Msg("create accounts in this tenant"))
            if session.exec(select(Account).where(Account.name == name)).first() is not None:
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
            .order_by(Account.name)
        )
        if not actor.is_admin:
            if actor.role == Role.OWNER:
                statement = statement.where(Account.tenant_id == actor.tenant_id)
            else:
                statement = statement.where(Account.id == actor.account_id)
        return [account_view(a, t) for a, t in session.exec(statement)]
