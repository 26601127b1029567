"""The `imagehub` command line: parses arguments, calls core, prints text or one JSON document.

Exit status: 0 done; 1 failed; 2 bad usage or invalid value; 3 not found; 4 forbidden; 5 conflict.
Errors are one line on stderr.

Every command group is in `GROUPS`, with the module that builds it. Only the module of the group
being run is imported (`image list` loads neither the VM, link, gateway nor TUI code); the others
appear in `--help` by name and help line alone.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from core.catalog.errors import ImagehubError, Invalid
from core.rules.display import human_size as human_size  # the one size format of the CLI and the TUI
from core.rules.display import one_line

if TYPE_CHECKING:
    from core.catalog.catalog import Catalog
    from core.catalog.settings import Settings
    from core.rules.access import Actor

PROG = "imagehub"
MAX_ROWS = 10**12  # the most rows --limit / --offset may name (far beyond any catalog, far below SQL's 2**63)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2; options are never abbreviated
    (a remote command over the admin SSH door must not slip `--as` in as `--a`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith(_REQUIRED):
            message = required_in_words(message.removeprefix(_REQUIRED).split(", "))
        raise UsageError(message)


_REQUIRED = "the following arguments are required: "


def required_in_words(options: list[str]) -> str:
    """argparse's missing options in people's words, each with the option to give:
    `OS version is required (--os-version)`."""
    from core.rules.validation import FIELD_WORDS

    known = [option for option in options if option in FIELD_WORDS]
    others = [option for option in options if option not in FIELD_WORDS]
    if not known:
        return _REQUIRED + ", ".join(options)
    named = [str(FIELD_WORDS[option]) for option in known]
    words = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    verb = "is" if len(known) == 1 else "are"
    text = f"{words} {verb} required ({', '.join(known)})"
    return text + (f"; also required: {', '.join(others)}" if others else "")


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
            from core.catalog.settings import load_settings

            self._settings = load_settings(getattr(self.args, "config", None))
        return self._settings

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from core.catalog.catalog import open_catalog

            self._catalog = open_catalog(self.settings)
        return self._catalog

    @property
    def account_name(self) -> str:
        return getattr(self.args, "as_account", None) or os.environ.get("IMAGEHUB_ACCOUNT") or "admin"

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            from core.catalog import db
            from core.rules.access import resolve_actor

            with db.read_session(self.catalog.engine) as session:
                self._actor = resolve_actor(session, self.account_name)
        return self._actor

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.dispose()


# Set by the admin SSH door (gateway/admin_ssh.py) in the environment of every command it runs; the
# SSH client cannot change that environment (the door builds it and accepts no `env` requests).
VIA_SSH_ENV = "IMAGEHUB_VIA_SSH"
SERVER_PATH_REFUSED = "server paths are not accepted over the SSH door: use '-' for standard input or output"


def via_ssh_door() -> bool:
    return os.environ.get(VIA_SSH_ENV) == "1"


def whole_number(value: str) -> int:
    """An argparse type: ASCII digits only (int() also takes "1_000" and other scripts' digits)."""
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}")
    return int(text)


def whole_number_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (a count the client sends is capped before
    it reaches SQL, whose integers end at 2**63)."""

    def parse(value: str) -> int:
        number = whole_number(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value.strip()} is out of range; choose {low} to {high}")
        return number

    parse.__name__ = "whole number"
    return parse


def seconds_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds from `low` to `high` (never inf or nan)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
        if not low <= number <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"{value.strip()} is out of range; choose {low:g} to {high:g} seconds")
        return number

    parse.__name__ = "seconds"
    return parse


def server_path(value: str) -> Path:
    """A command argument naming a file on this server (docs/security.md L6): refused over the SSH door, with
    the same answer whether or not it exists."""
    if via_ssh_door():
        raise Invalid(SERVER_PATH_REFUSED)
    return Path(value)


# ---- the command groups -------------------------------------------------------------------------

Handler = Callable[[Context], int]


@dataclass(frozen=True)
class Group:
    """A top-level command and the CLI module whose `build(sub, common, group)` adds its parser."""

    name: str
    module: str
    help: str


GROUPS: tuple[Group, ...] = (
    Group("init", "cli.init", "create the catalog, store, secret and admin account"),
    Group("tenant", "cli.accounts", "tenants (admin only)"),
    Group("account", "cli.accounts", "accounts"),
    Group("image", "cli.images", "images"),
    Group("audit", "cli.audit", "the audit trail (admins; a tenant owner: its tenant's)"),
    Group("link", "cli.links", "download links"),
    Group("vm", "cli.vms", "VMs made from images"),
    Group("serve", "cli.serve", "run the download gateway and the job worker"),
    Group("tui", "cli.tui", "the terminal UI"),
)


def handler_in(module: str, name: str) -> Handler:
    """A handler of another CLI module, imported when its command runs (not when the parser is built)."""

    def run(ctx: Context) -> int:
        handler: Handler = getattr(importlib.import_module(module), name)
        return handler(ctx)

    return run


def add_command(
    group: Any,
    common: argparse.ArgumentParser,
    name: str,
    handler: Handler,
    help_text: str,
    *,
    description: str | None = None,
    json_flag: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand of `group` (a subparsers action) that runs `handler`."""
    p: argparse.ArgumentParser = group.add_parser(
        name, help=help_text, description=help_text if description is None else description, parents=[common]
    )
    p.set_defaults(handler=handler)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def add_group(sub: Any, common: argparse.ArgumentParser, name: str, help_text: str, *, dest: str = "sub") -> Any:
    """A command with actions (`imagehub image list`): its subparsers action."""
    return sub.add_parser(name, help=help_text, parents=[common]).add_subparsers(
        dest=dest, metavar="ACTION", parser_class=Parser, required=True
    )


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


_GLOBAL_OPTIONS_WITH_VALUE = ("--config", "--as")


def invoked_group(argv: Sequence[str]) -> str | None:
    """The command named in `argv` (its first word that is neither an option nor an option's value)."""
    value_follows = False
    for arg in argv:
        if value_follows:
            value_follows = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUE:
            value_follows = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] = ()) -> Parser:
    """The parser, with the full subcommands of the group `argv` names; the others by name and help only."""
    common = _globals()
    parser = Parser(prog=PROG, description="Custom VM images for cloud tenants.", parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    wanted = invoked_group(argv)
    for group in GROUPS:
        if group.name == wanted:
            importlib.import_module(group.module).build(sub, common, group)
        else:
            sub.add_parser(group.name, help=group.help)
    return parser


# Files imagehub makes (catalog, images, exports, logs) are not for other users of the host.
UMASK = 0o027


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(UMASK)
    if os.environ.get(VIA_SSH_ENV):
        # The door ends a session with SIGHUP: an `imagehub serve` started under nohup must not pass
        # its ignored SIGHUP on to the sessions it runs (they would then last until the SIGKILL after).
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return 2
    if getattr(args, "handler", None) is None:
        if not argv and sys.stdin.isatty() and sys.stdout.isatty():
            args = build_parser(["tui"]).parse_args(["tui"])
        if getattr(args, "handler", None) is None:
            sys.stderr.write(f"{PROG}: error: a command is required (see {PROG} --help)\n")
            return 2
    ctx = Context(args)
    try:
        return args.handler(ctx)  # type: ignore[no-any-return]
    except ImagehubError as exc:
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for the user; the details go to the log, if there is one
        logger = logging.getLogger("imagehub")
        if logger.hasHandlers():  # else logging's last resort would print the traceback to stderr
            logger.exception("unexpected error")
        sys.stderr.write(f"{PROG}: error: internal error: {one_line(f'{type(exc).__name__}: {exc}')}\n")
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    # `python -m cli.main` runs this file as __main__, a second copy of the module; the group modules
    # import `cli.main` (Context, the output helpers), so run that copy's main.
    from cli.main import main as _main

    sys.exit(_main())
