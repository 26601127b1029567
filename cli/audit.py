"""`imagehub audit list`: the audit trail, newest first (platform admins)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import Context, Group, add_command, add_group, emit_json, print_table
from core.catalog.errors import Invalid, Msg


def cmd_audit_list(ctx: Context) -> int:
    from core.catalog import audit
    from core.rules import access

    access.require_admin(ctx.actor, Msg("read the audit trail"))
    a = ctx.args
    if a.limit < 1:
        raise Invalid("--limit must be at least 1")
    events = audit.list_events(ctx.catalog.engine, target=a.target, action=a.action, limit=a.limit)
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
    p.add_argument("--target", help="an image, account or tenant")
    p.add_argument("--action", help="e.g. image.delete, job.claim")
    p.add_argument("--limit", type=int, default=1000)
