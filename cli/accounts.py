"""`imagehub tenant create|list` and `imagehub account create|list|delete|set|key`."""

from __future__ import annotations

import argparse
from typing import Any

from cli.keys import build_key_group
from cli.main import Context, Group, add_command, add_group, emit_json, print_table


def cmd_tenant_create(ctx: Context) -> int:
    from core.accounts import accounts

    tenant = accounts.create_tenant(ctx.catalog, ctx.actor, ctx.args.name)
    if ctx.args.json:
        emit_json(tenant)
    else:
        print(f"created tenant {tenant['name']}")
    return 0


def cmd_tenant_list(ctx: Context) -> int:
    from core.accounts import accounts

    tenants = accounts.list_tenants(ctx.catalog, ctx.actor)
    if ctx.args.json:
        emit_json(tenants)
    else:
        print_table([(t["name"], t["created_at"]) for t in tenants], ("NAME", "CREATED"))
    return 0


def cmd_account_create(ctx: Context) -> int:
    from core.accounts import accounts

    a = ctx.args
    account = accounts.create_account(ctx.catalog, ctx.actor, a.name, tenant=a.tenant, role=a.role, perm=a.perm)
    if a.json:
        emit_json(account)
    else:
        print(f"created account {account['name']} ({account['role']})")
    return 0


def cmd_account_list(ctx: Context) -> int:
    from core.accounts import accounts

    rows = accounts.list_accounts(ctx.catalog, ctx.actor)
    if ctx.args.json:
        emit_json(rows)
    else:
        print_table([(r["name"], r["tenant"], r["role"], r["perm"]) for r in rows], ("NAME", "TENANT", "ROLE", "PERM"))
    return 0


def cmd_account_delete(ctx: Context) -> int:
    from core.accounts import accounts

    deleted = accounts.delete_account(ctx.catalog, ctx.actor, ctx.args.name)
    if ctx.args.json:
        emit_json(deleted)
    else:
        print(
            f"deleted account {deleted['name']} ({deleted['keys_removed']} keys removed,"
            f" {deleted['links_revoked']} links revoked)"
        )
    return 0


def cmd_account_set(ctx: Context) -> int:
    from core.accounts import accounts

    a = ctx.args
    account = accounts.set_account(ctx.catalog, ctx.actor, a.name, perm=a.perm, tenant=a.tenant)
    if a.json:
        emit_json(account)
    else:
        print(f"account {account['name']}: tenant {account['tenant'] or '-'}, role {account['role']},"
              f" perm {account['perm'] or '-'}")  # fmt: skip
    return 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    if group.name == "tenant":
        tenant = add_group(sub, common, group.name, group.help)
        add_command(tenant, common, "create", cmd_tenant_create, "create a tenant").add_argument("name")
        add_command(tenant, common, "list", cmd_tenant_list, "list tenants")
        return
    account = add_group(sub, common, group.name, group.help)
    p = add_command(account, common, "create", cmd_account_create, "create an account")
    p.add_argument("name")
    p.add_argument("--tenant")
    p.add_argument("--role", required=True, choices=["owner", "member", "admin"])
    p.add_argument("--perm", choices=["view", "manage"])
    add_command(account, common, "list", cmd_account_list, "list accounts")
    p = add_command(
        account, common, "delete", cmd_account_delete, "delete an account: keys removed, links revoked, sessions ended"
    )
    p.add_argument("name")
    p = add_command(
        account,
        common,
        "set",
        cmd_account_set,
        "change a member's perm, or move an account to another tenant (admins)",
    )
    p.add_argument("name")
    p.add_argument("--perm", choices=["view", "manage"])
    p.add_argument("--tenant", help="move the account to this tenant (platform admins only)")
    build_key_group(account, common)
