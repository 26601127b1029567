"""The audit trail: every change and every refusal, with who, what, which resource and why."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.catalog import db
from core.catalog.models import AuditEvent


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
        record(session, actor, action, target, "refused", reason, **detail)


def list_events(
    engine: Engine, *, target: str | None = None, action: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The newest events first, optionally for one resource or one action."""
    from sqlmodel import col, select

    from core.catalog.clock import iso

    with db.read_session(engine) as session:
        statement = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
        if target:
            statement = statement.where(AuditEvent.target == target)
        if action:
            statement = statement.where(AuditEvent.action == action)
        return [
            {
                "id": e.id,
                "at": iso(e.at),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "reason": e.reason,
                "detail": json.loads(e.detail) if e.detail else None,
            }
            for e in session.exec(statement)
        ]
