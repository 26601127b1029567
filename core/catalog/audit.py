"""The audit trail: every change and every refusal, with who, what, which resource and why."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, union
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.catalog import db
from core.catalog.clock import iso
from core.catalog.models import Account, AuditEvent, Image, Link, Role, Vm

REFUSED = "refused"  # the outcome of a refused change (record_refusal)


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None,
    outcome: str = "ok",
    reason: str | None = None,
    **detail: Any,
) -> None:
    """Add an event to the caller's transaction (it commits with the change it describes)."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            reason=reason,
            detail=json.dumps(detail, sort_keys=True, default=str) if detail else None,
        )
    )


def record_refusal(engine: Engine, actor: str, action: str, target: str | None, reason: str, **detail: Any) -> None:
    """A refused change leaves its transaction rolled back: record the refusal in one of its own."""
    with db.write_session(engine) as session:
        record(session, actor, action, target, REFUSED, reason, **detail)


def list_events(
    engine: Engine,
    *,
    target: str | None = None,
    action: str | None = None,
    limit: int = 1000,
    target_prefix: str | None = None,
    account_prefix: str | None = None,
    tenant_id: int | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The newest events first, optionally for one resource or one action.

    `target_prefix`: resources whose ID or name starts so; `account_prefix`: events by an account whose
    name starts so, or about it (`account.*`); `tenant_id`: only that tenant's trail (`tenant_scope`);
    `before_id`: the page after the one that ended with that event."""
    with db.read_session(engine) as session:
        statement = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
        if target:
            statement = statement.where(AuditEvent.target == target)
        if action:
            statement = statement.where(AuditEvent.action == action)
        if target_prefix:
            statement = statement.where(col(AuditEvent.target).startswith(target_prefix, autoescape=True))
        if account_prefix:
            statement = statement.where(_by_or_about(account_prefix))
        if tenant_id is not None:
            statement = statement.where(tenant_scope(tenant_id))
        if before_id is not None:
            statement = statement.where(col(AuditEvent.id) < before_id)
        return [_event_view(e) for e in session.exec(statement)]


def list_actions(engine: Engine, tenant_id: int | None = None) -> list[str]:
    """The actions the trail holds (within `tenant_id`'s trail when given), sorted."""
    with db.read_session(engine) as session:
        statement = select(AuditEvent.action).distinct().order_by(col(AuditEvent.action))
        if tenant_id is not None:
            statement = statement.where(tenant_scope(tenant_id))
        return list(session.exec(statement))


def tenant_scope(tenant_id: int) -> ColumnElement[bool]:
    """A tenant's trail: the events on its images, VMs and links, less the refusals of accounts outside
    the tenant (they would name another tenant's accounts). Events on accounts and tenants are left out:
    an account's name may have been another tenant's before."""
    owned = union(
        select(Image.id).where(Image.tenant_id == tenant_id),
        select(Vm.id).where(Vm.tenant_id == tenant_id),
        select(Link.id).where(Link.tenant_id == tenant_id),
    )
    insiders = select(Account.name).where(or_(col(Account.tenant_id) == tenant_id, col(Account.role) == Role.ADMIN))
    return and_(
        col(AuditEvent.target).in_(owned),
        or_(col(AuditEvent.outcome) != REFUSED, col(AuditEvent.actor).in_(insiders)),
    )


def _by_or_about(account_prefix: str) -> ColumnElement[bool]:
    about = and_(
        col(AuditEvent.action).startswith("account."),
        col(AuditEvent.target).startswith(account_prefix, autoescape=True),
    )
    return or_(col(AuditEvent.actor).startswith(account_prefix, autoescape=True), about)


def _event_view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "outcome": event.outcome,
        "reason": event.reason,
        "detail": json.loads(event.detail) if event.detail else None,
    }
