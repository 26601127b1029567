"""The `imagehub` command line: parses arguments, calls core, prints text or one JSON document.

Exit status: 0 done; 1 failed; 2 bad usage or invalid value; 3 not found; 4 forbidden; 5 conflict.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from core.accounts import accounts
from core.catalog import db
from core.catalog.catalog import Catalog, open_catalog
from core.catalog.errors import ImagehubError, Invalid, Msg
from core.catalog.settings import Settings, load_settings
from core.images import images
from core.rules.access import Actor, resolve_actor

PROG = "imagehub"


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2; options are never abbreviated
    (a remote command over the admin SSH door must not slip `--as` in as `--a`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


# Compact JSON through the stdlib's C encoder (`indent` would force the pure-Python one).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_CHUNK = 1000


def pretty_json(args: argparse.Namespace) -> bool:
    """Indent JSON for `--pretty` or a terminal; scripts (a pipe or a file) get compact JSON."""
    return bool(getattr(args, "pretty", False)) or sys.stdout.isatty()


def emit_json_array(items: Iterable[Any], *, pretty: bool = True) -> None:
    """One JSON array, written in chunks so that memory stays flat for any length.

    Compact (`pretty=False`): `[`, the items' C-encoded JSON joined by `,` a chunk at a time, `]`; the same
    document as the indented form apart from whitespace."""
    write = sys.stdout.write
    if not pretty:
        encode = _COMPACT.encode
        iterator = iter(items)
        separator = "["
        while chunk := list(itertools.islice(iterator, _CHUNK)):
            write(separator + encode(chunk)[1:-1])
            separator = ","
        write("[]\n" if separator == "[" else "]\n")
        return
    first = True
    for item in items:
        body = json.dumps(item, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        write(("[\n  " if first else ",\n  ") + body)
        first = False
    write("[]\n" if first else "\n]\n")


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "GiB", "TiB") else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


class Context:
    """What a command needs: settings, the open catalog and the caller, opened on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._settings: Settings | None = None
        self._catalog: Catalog | None = None
        self._actor: Actor | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(getattr(self.args, "config", None))
        return self._settings

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.settings)
        return self._catalog

    @property
    def account_name(self) -> str:
        return getattr(self.args, "as_account", None) or os.environ.get("IMAGEHUB_ACCOUNT") or "admin"

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            with db.read_session(self.catalog.engine) as session:
                self._actor = resolve_actor(session, self.account_name)
        return self._actor

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.dispose()


# ---- commands -------------------------------------------------------------------------------


def cmd_init(ctx: Context) -> int:
    from core.setup.bootstrap import initialise
    from core.setup.demo import seed_demo

    catalog, report = initialise(ctx.settings)
    ctx._catalog = catalog
    demo_ids = seed_demo(catalog) if ctx.args.demo else []
    if ctx.args.json:
        emit_json(
            {
                "data_dir": str(report.data_dir),
                "created": report.created,
                "migrated_from": report.migrated_from,
                "demo_images": demo_ids,
                "changed": report.changed or bool(demo_ids),
            }
        )
        return 0
    for item in report.created:
        print(f"created {item}")
    if report.migrated_from:
        print(f"upgraded the catalog schema from {report.migrated_from} to {db.head_revision()}")
    if demo_ids:
        print(f"created demo tenant with {len(demo_ids)} images")
    if not report.changed and not demo_ids:
        print(f"already initialised in {report.data_dir}; nothing changed")
    return 0


def cmd_tenant_create(ctx: Context) -> int:
    tenant = accounts.create_tenant(ctx.catalog, ctx.actor, ctx.args.name)
    if ctx.args.json:
        emit_json(tenant)
    else:
        print(f"created tenant {tenant['name']}")
    return 0


def cmd_tenant_list(ctx: Context) -> int:
    tenants = accounts.list_tenants(ctx.catalog, ctx.actor)
    if ctx.args.json:
        emit_json(tenants)
    else:
        print_table([(t["name"], t["created_at"]) for t in tenants], ("NAME", "CREATED"))
    return 0


def cmd_account_create(ctx: Context) -> int:
    a = ctx.args
    account = accounts.create_account(ctx.catalog, ctx.actor, a.name, tenant=a.tenant, role=a.role, perm=a.perm)
    if a.json:
        emit_json(account)
    else:
        print(f"created account {account['name']} ({account['role']})")
    return 0


def cmd_account_list(ctx: Context) -> int:
    rows = accounts.list_accounts(ctx.catalog, ctx.actor)
    if ctx.args.json:
        emit_json(rows)
    else:
        print_table([(r["name"], r["tenant"], r["role"], r["perm"]) for r in rows], ("NAME", "TENANT", "ROLE", "PERM"))
    return 0


def cmd_account_delete(ctx: Context) -> int:
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
    a = ctx.args
    account = accounts.set_account(ctx.catalog, ctx.actor, a.name, perm=a.perm, tenant=a.tenant)
    if a.json:
        emit_json(account)
    else:
        print(f"account {account['name']}: tenant {account['tenant'] or '-'}, role {account['role']},"
              f" perm {account['perm'] or '-'}")  # fmt: skip
    return 0


def cmd_image_list(ctx: Context) -> int:
    a = ctx.args
    query = images.ImageQuery(
        tenant=a.tenant,
        status=a.status,
        text=a.filter,
        sort=a.sort,
        descending=not a.ascending,
        limit=a.limit,
        offset=a.offset,
    )
    if a.json:
        emit_json_array(images.iter_images(ctx.catalog, ctx.actor, query), pretty=pretty_json(a))
        return 0
    rows = [
        (i["id"], i["name"], i["os_type"], i["os_name"], i["status"], human_size(i["virtual_size"]), i["created_at"])
        for i in images.iter_images(ctx.catalog, ctx.actor, query)
    ]
    print_table(rows, ("ID", "NAME", "SYSTEM TYPE", "OS", "STATUS", "SIZE", "CREATED"))
    return 0


def cmd_image_show(ctx: Context) -> int:
    image = images.get_image(ctx.catalog, ctx.actor, ctx.args.id)
    if ctx.args.json:
        emit_json(image)
        return 0
    fields = (
        "id",
        "name",
        "description",
        "tenant",
        "os_type",
        "os_name",
        "status",
        "error",
        "disk_format",
        "virtual_size",
        "target_size_gb",
        "sha256",
        "source",
        "created_at",
        "updated_at",
    )
    for key in fields:
        value = image[key]
        if key == "virtual_size":
            value = f"{human_size(value)} ({value} bytes)" if value is not None else "-"
        print(f"{key + ':':16}{'-' if value in (None, '') else value}")
    if image["vms"]:
        print(f"{'vms:':16}{', '.join(image['vms'])}")
    progress = image.get("progress")
    if progress:
        done, total = progress["bytes_done"], progress["bytes_total"]
        pct = f" {100 * done / total:.0f}%" if total else ""
        print(
            f"{'progress:':16}{progress['phase'] or progress['state']}{pct} ({human_size(done)} of {human_size(total)})"
        )
    return 0


def cmd_image_edit(ctx: Context) -> int:
    image = images.edit_image(ctx.catalog, ctx.actor, ctx.args.id, name=ctx.args.name, description=ctx.args.description)
    if ctx.args.json:
        emit_json(image)
    else:
        print(f"updated {image['id']}")
    return 0


def _batch(ctx: Context, run: Callable[..., list[images.BatchResult]], verb: str) -> int:
    results = run(ctx.catalog, ctx.actor, ctx.args.ids)
    if ctx.args.json:
        emit_json([r.as_dict() for r in results])
    for result in results:
        if result.ok:
            if not ctx.args.json:
                print(f"{result.id}: {verb}")
        else:
            sys.stderr.write(f"{PROG}: {result.id}: {result.error}\n")
    refused = [r for r in results if not r.ok]
    return refused[0].exit_code if refused else 0


def cmd_image_delete(ctx: Context) -> int:
    return _batch(ctx, images.delete_images, "deleted (in the recycle bin)")


def cmd_image_restore(ctx: Context) -> int:
    return _batch(ctx, images.restore_images, "restored")


def cmd_image_destroy(ctx: Context) -> int:
    return _batch(ctx, images.destroy_images, "destroyed")


# Set by the admin SSH door (gateway/admin_ssh.py) in the environment of every command it runs; the
# SSH client cannot change that environment (the door builds it and accepts no `env` requests).
VIA_SSH_ENV = "IMAGEHUB_VIA_SSH"
SERVER_PATH_REFUSED = "server paths are not accepted over the SSH door: use '-' for standard input or output"


def via_ssh_door() -> bool:
    return os.environ.get(VIA_SSH_ENV) == "1"


def server_path(value: str) -> Path:
    """A command argument naming a file on this server (checklist L6): refused over the SSH door, with
    the same answer whether or not it exists."""
    if via_ssh_door():
        raise Invalid(SERVER_PATH_REFUSED)
    return Path(value)


def cmd_image_export_xlsx(ctx: Context) -> int:
    from core.images.export_xlsx import export_stream, export_xlsx

    a = ctx.args
    query = images.ImageQuery(tenant=a.tenant, status=a.status, text=a.filter)
    if a.path == "-":
        if a.json:
            raise Invalid("--json cannot be used with '-': standard output carries the workbook")
        if sys.stdout.isatty():
            raise Invalid("standard output is a terminal; redirect it to a file (> images.xlsx)")
        sys.stdout.flush()
        export_stream(ctx.catalog, ctx.actor, sys.stdout.buffer, query)
        return 0
    given = server_path(a.path)
    count = export_xlsx(ctx.catalog, ctx.actor, given, query)
    path = given.resolve()
    if a.json:
        emit_json({"path": str(path), "rows": count})
    else:
        print(f"wrote {count} images to {path}")
    return 0


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


# ---- parser ---------------------------------------------------------------------------------

_EXTENSIONS: list[Callable[[Any, argparse.ArgumentParser], None]] = []
# The subcommand groups ("image", "account", "tenant") by name, so that extensions can add to them.
GROUPS: dict[str, Any] = {}


def extend(register: Callable[[Any, argparse.ArgumentParser], None]) -> Callable[[Any, argparse.ArgumentParser], None]:
    """Let other modules of the CLI add their subcommands (called with the subparsers action)."""
    _EXTENSIONS.append(register)
    return register


def _globals() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (else $IMAGEHUB_CONFIG, else ./config/imagehub.toml)",
    )
    common.add_argument(
        "--as",
        dest="as_account",
        metavar="ACCOUNT",
        default=argparse.SUPPRESS,
        help="act as this account (else $IMAGEHUB_ACCOUNT, else admin)",
    )
    return common


def build_parser() -> Parser:
    common = _globals()
    parser = Parser(prog=PROG, description="Custom VM images for cloud tenants.", parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(
        group: Any, name: str, handler: Callable[[Context], int], help_text: str, *, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    p = add(sub, "init", cmd_init, "create the catalog, store, secret and admin account")
    p.add_argument("--demo", action="store_true", help="add a demo tenant with sample images")

    tenant = sub.add_parser("tenant", help="tenants (admin only)", parents=[common]).add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    add(tenant, "create", cmd_tenant_create, "create a tenant").add_argument("name")
    add(tenant, "list", cmd_tenant_list, "list tenants")

    account = sub.add_parser("account", help="accounts", parents=[common]).add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    p = add(account, "create", cmd_account_create, "create an account")
    p.add_argument("name")
    p.add_argument("--tenant")
    p.add_argument("--role", required=True, choices=["owner", "member", "admin"])
    p.add_argument("--perm", choices=["view", "manage"])
    add(account, "list", cmd_account_list, "list accounts")
    p = add(account, "delete", cmd_account_delete, "delete an account: keys removed, links revoked, sessions ended")
    p.add_argument("name")
    p = add(account, "set", cmd_account_set, "change a member's perm, or move an account to another tenant (admins)")
    p.add_argument("name")
    p.add_argument("--perm", choices=["view", "manage"])
    p.add_argument("--tenant", help="move the account to this tenant (platform admins only)")

    image = sub.add_parser("image", help="images", parents=[common]).add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    p = add(image, "list", cmd_image_list, "list the images you may see")
    p.add_argument("--tenant")
    p.add_argument("--status", help="one status; deleted images are listed only with --status deleted")
    p.add_argument("--filter", help="name substring or ID prefix")
    p.add_argument("--sort", default="created_at", choices=list(images.SORTABLE))
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--limit", type=int)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--pretty", action="store_true", help="indent the JSON (the default on a terminal)")
    add(image, "show", cmd_image_show, "show one image").add_argument("id")
    p = add(image, "edit", cmd_image_edit, "change name and/or remark (any status)")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--description")
    for name, handler, text in (
        ("delete", cmd_image_delete, "move images to the recycle bin"),
        ("restore", cmd_image_restore, "restore images from the recycle bin"),
        ("destroy", cmd_image_destroy, "remove images in the recycle bin for good"),
    ):
        add(image, name, handler, text).add_argument("ids", nargs="+", metavar="ID")
    p = add(image, "export-xlsx", cmd_image_export_xlsx, "write the image list to an Excel file")
    p.add_argument("path", metavar="PATH|-", help="'-': standard output (the only form over the SSH door)")
    p.add_argument("--tenant")
    p.add_argument("--status")
    p.add_argument("--filter")

    audit = sub.add_parser("audit", help="the audit trail (admin only)", parents=[common]).add_subparsers(
        dest="sub", metavar="ACTION", parser_class=Parser, required=True
    )
    p = add(audit, "list", cmd_audit_list, "list audit events, newest first")
    p.add_argument("--target", help="an image, account or tenant")
    p.add_argument("--action", help="e.g. image.delete, job.claim")
    p.add_argument("--limit", type=int, default=1000)

    GROUPS.update(tenant=tenant, account=account, image=image, audit=audit)
    for register in _EXTENSIONS:
        register(sub, common)
    return parser


def _load_extensions() -> None:
    """Import the modules that add subcommands (they call `extend` at import time)."""
    import importlib

    for module in ("cli.jobs", "cli.links", "cli.vms", "cli.serve", "cli.keys", "cli.tui"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


# Files imagehub makes (catalog, images, exports, logs) are not for other users of the host.
UMASK = 0o027


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(UMASK)
    _load_extensions()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    if getattr(args, "handler", None) is None:
        if not argv and sys.stdin.isatty() and sys.stdout.isatty():
            args = parser.parse_args(["tui"]) if "tui" in _subcommands(parser) else args
        if getattr(args, "handler", None) is None:
            sys.stderr.write(f"{PROG}: error: a command is required (see {PROG} --help)\n")
            return 2
    ctx = Context(args)
    try:
        return args.handler(ctx)
    except ImagehubError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for the user; the details go to the log
        logging.getLogger("imagehub").exception("unexpected error")
        sys.stderr.write(f"{PROG}: error: internal error: {type(exc).__name__}: {exc}\n".splitlines()[0] + "\n")
        return 1
    finally:
        ctx.close()


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def fail_usage(message: str) -> NoReturn:
    raise Invalid(message)


if __name__ == "__main__":
    # `python -m cli.main` runs this file as __main__, a second copy of the module; extensions register
    # with `cli.main` (they import it), so run that copy's main.
    from cli.main import main as _main

    sys.exit(_main())
