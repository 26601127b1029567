"""`imagehub audit list`: the audit trail, newest first (platform admins: all of it; tenant owners:
their tenant's, as in the TUI's audit screen; core.rules.access.audit_scope decides)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import MAX_ROWS, Context, Group, add_command, add_group, emit_json, print_table, whole_number_in


def cmd_audit_list(ctx: Context) -> int:
    from core.catalog import audit
    from core.rules import access

    tenant_id = access.audit_scope(ctx.actor)
    a = ctx.args
    events = audit.list_events(
        ctx.catalog.engine,
        target=a.target,
        action=a.action,
        target_prefix=a.image,
        account_prefix=a.account,
        tenant_id=tenant_id,
        limit=a.limit,
    )
    if a.json:
        emit_json(events)
    else:
        print_table(
            [(e["at"], e["actor"], e["action"], e["target"], e["outcome"], e["reason"]) for e in events],
            ("AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "REASON"),
        )
    return 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    audit = add_group(sub, common, group.name, group.help)
    p = add_command(audit, common, "list", cmd_audit_list, "list audit events, newest first")
    p.add_argument("--target", help="an image, account or tenant (exactly)")
    p.add_argument("--image", metavar="ID", help="events on targets (images, VMs, links) whose ID starts so")
    p.add_argument("--account", metavar="NAME", help="events by or about accounts whose name starts so")
    p.add_argument("--action", help="e.g. image.delete, job.claim")
    p.add_argument("--limit", type=whole_number_in(1, MAX_ROWS), default=1000)
