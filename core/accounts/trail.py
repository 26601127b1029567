"""The audit trail as an account may read it: platform admins all of it, a tenant's owner its tenant's
trail (core.rules.access.audit_scope decides), one page at a time, newest first."""

from __future__ import annotations

from typing import Any

from core.catalog import audit
from core.catalog.catalog import Catalog
from core.rules import access
from core.rules.access import Actor

PAGE = 200  # events per page: a long trail is never read at once


def read_trail(
    catalog: Catalog,
    actor: Actor,
    *,
    image: str | None = None,
    account: str | None = None,
    action: str | None = None,
    before_id: int | None = None,
    limit: int = PAGE,
) -> list[dict[str, Any]]:
    """One page of the events the actor may read, newest first. `image`: events on resources whose ID
    starts so; `account`: by or about an account whose name starts so; `before_id`: the next page."""
    tenant_id = access.audit_scope(actor)
    return audit.list_events(
        catalog.engine,
        action=action or None,
        target_prefix=image or None,
        account_prefix=account or None,
        tenant_id=tenant_id,
        before_id=before_id,
        limit=limit,
    )


def trail_actions(catalog: Catalog, actor: Actor) -> list[str]:
    """The actions in the trail the actor may read (for a filter's choices)."""
    return audit.list_actions(catalog.engine, access.audit_scope(actor))
