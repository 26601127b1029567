"""`imagehub account key add|list|remove`: SSH keys for the admin front door (`key add NAME -` reads stdin)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.main import Context, emit_json, print_table, server_path


def cmd_key_add(ctx: Context) -> int:
    from core.accounts import keys

    given = ctx.args.pubkey_file
    source = sys.stdin.buffer if given == "-" else server_path(given)
    added = keys.add_key(ctx.catalog, ctx.actor, ctx.args.name, source)
    if ctx.args.json:
        emit_json(added)
    else:
        print(f"added key {added['fingerprint']} to {added['account']}")
    return 0


def cmd_key_list(ctx: Context) -> int:
    from core.accounts import keys

    rows = keys.list_keys(ctx.catalog, ctx.actor, ctx.args.name)
    if ctx.args.json:
        emit_json(rows)
    else:
        print_table([(r["fingerprint"], r["type"], r["comment"], r["created_at"]) for r in rows],
                    ("FINGERPRINT", "TYPE", "COMMENT", "ADDED"))  # fmt: skip
    return 0


def cmd_key_remove(ctx: Context) -> int:
    from core.accounts import keys

    keys.remove_key(ctx.catalog, ctx.actor, ctx.args.name, ctx.args.fingerprint)
    print(f"removed key {ctx.args.fingerprint} from {ctx.args.name}")
    return 0


def build_key_group(account: Any, common: argparse.ArgumentParser) -> None:
    """`account key ...` (`account` is the account group's subparsers action)."""
    key = account.add_parser("key", help="SSH keys for the admin front door", parents=[common]).add_subparsers(
        dest="key_action", metavar="ACTION", required=True
    )
    for name, handler, text in (
        ("add", cmd_key_add, "register an OpenSSH public key for an account"),
        ("list", cmd_key_list, "list an account's keys"),
        ("remove", cmd_key_remove, "remove a key by its SHA256 fingerprint"),
    ):
        p = key.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("name", metavar="NAME")
        if name == "add":
            p.add_argument(
                "pubkey_file",
                metavar="PUBKEY_FILE|-",
                help="'-': read the key from standard input (the only form over the SSH door); at most 16 KiB",
            )
        elif name == "remove":
            p.add_argument("fingerprint", metavar="FINGERPRINT")
