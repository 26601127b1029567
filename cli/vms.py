"""`imagehub vm create|list|show|start|stop|delete` and `imagehub image capture`: the CLI face of core.compute.vms
and core.compute.capture (the capture's parser is in cli.images). Parses, calls core, prints text or one
JSON document; errors map to exit codes in cli.main.main.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from cli.jobs import report_image_job
from cli.main import PROG, Context, Group, add_command, add_group, emit_json, print_table, seconds_in
from core.catalog.errors import ImagehubError, Invalid
from core.compute import capture, vms


def _read_password(args: argparse.Namespace) -> str:
    """--password, else --password-stdin (first line of stdin), else a prompt on a terminal."""
    if args.password is not None:
        return args.password
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        first = getpass.getpass("admin password for the new VM: ")
        if getpass.getpass("again: ") != first:
            raise Invalid("the two passwords differ")
        return first
    raise Invalid("password is required: give --password P or --password-stdin")


def shown_status(vm: dict[str, Any]) -> str:
    """A VM's status in text output: one that nothing runs says so."""
    return "defined (no compute driver)" if vm["status"] == vms.DEFINED else str(vm["status"])


def cmd_vm_create(ctx: Context) -> int:
    a = ctx.args
    vm = vms.create_vm(ctx.catalog, ctx.actor, a.image, a.name, _read_password(a), start=not a.no_start)
    if a.json:
        emit_json(vm)
    else:
        print(f"created {vm['id']} from {vm['image_id']} ({shown_status(vm)})")
    return 0


def cmd_vm_list(ctx: Context) -> int:
    rows = vms.list_vms(ctx.catalog, ctx.actor, image_id=ctx.args.image)
    if ctx.args.json:
        emit_json(rows)
        return 0
    print_table(
        [(v["id"], v["name"], v["image_id"], shown_status(v), v["driver"], v["created_at"]) for v in rows],
        ("ID", "NAME", "IMAGE", "STATUS", "DRIVER", "CREATED"),
    )
    return 0


def cmd_vm_show(ctx: Context) -> int:
    vm = vms.get_vm(ctx.catalog, ctx.actor, ctx.args.id)
    if ctx.args.json:
        emit_json(vm)
        return 0
    for key in ("id", "name", "image_id", "status", "tenant", "driver", "arch", "created_by", "created_at"):
        value = shown_status(vm) if key == "status" else vm[key]
        print(f"{key + ':':12}{'-' if value in (None, '') else value}")
    return 0


def cmd_vm_start(ctx: Context) -> int:
    vm = vms.start_vm(ctx.catalog, ctx.actor, ctx.args.id)
    if ctx.args.json:
        emit_json(vm)
    else:
        print(f"{vm['id']}: {vm['status']}")
    return 0


def cmd_vm_stop(ctx: Context) -> int:
    a = ctx.args
    vm = vms.stop_vm(ctx.catalog, ctx.actor, a.id, force=a.force, timeout=a.timeout)
    if a.json:
        emit_json(vm)
    else:
        print(f"{vm['id']}: {vm['status']}")
    return 0


FOLLOW_EVERY = 0.5  # seconds between reads of a followed console


def cmd_vm_console(ctx: Context) -> int:
    """The VM's serial console log on standard output; --follow keeps printing what comes until the
    VM stops (or Ctrl-C)."""
    console = vms.open_console(ctx.catalog, ctx.actor, ctx.args.id)
    out = sys.stdout.buffer
    offset = 0
    while True:
        while chunk := console.read(offset):
            out.write(chunk)
            offset += len(chunk)
        out.flush()
        if not ctx.args.follow or not console.live():
            break
        time.sleep(FOLLOW_EVERY)
    while chunk := console.read(offset):  # what it printed while stopping
        out.write(chunk)
        offset += len(chunk)
    out.flush()
    return 0


def cmd_vm_delete(ctx: Context) -> int:
    results: list[dict[str, Any]] = []
    code = 0
    for vm_id in dict.fromkeys(ctx.args.ids):
        try:
            vms.delete_vm(ctx.catalog, ctx.actor, vm_id)
            results.append({"id": vm_id, "ok": True, "error": None})
            if not ctx.args.json:
                print(f"{vm_id}: deleted")
        except ImagehubError as exc:
            results.append({"id": vm_id, "ok": False, "error": str(exc)})
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            code = code or exc.exit_code
    if ctx.args.json:
        emit_json(results)
    return code


def cmd_image_capture(ctx: Context) -> int:
    a = ctx.args
    image = capture.submit_capture(
        ctx.catalog,
        ctx.actor,
        a.vm,
        a.name,
        description=a.description,
        os_type=a.os_type,
        platform=a.platform,
        arch=a.arch,
        os_version=a.os_version,
        size_gb=a.size_gb,
    )
    return report_image_job(ctx, image, what="capture", queued_as=f"creating from {a.vm} (job {image['job_id']})")


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    vm = add_group(sub, common, group.name, group.help)
    text = "create a VM from an available image, with a new admin password"
    p = add_command(vm, common, "create", cmd_vm_create, text)
    p.add_argument("--image", required=True, metavar="ID")
    p.add_argument("--name", required=True)
    p.add_argument("--password", help="the new admin password (root on Linux, Administrator on Windows)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--no-start", action="store_true", help="create it stopped")
    p = add_command(vm, common, "list", cmd_vm_list, "list the VMs you may see")
    p.add_argument("--image", metavar="ID", help="only the VMs made from this image")
    add_command(vm, common, "show", cmd_vm_show, "show one VM").add_argument("id")
    p = add_command(
        vm, common, "console", cmd_vm_console, "print a VM's serial console log (boot messages, login prompt)",
        json_flag=False,
    )  # fmt: skip
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing what comes until the VM stops")
    add_command(vm, common, "start", cmd_vm_start, "start a stopped VM").add_argument("id")
    p = add_command(vm, common, "stop", cmd_vm_stop, "power a VM off (ACPI, then a hard stop after --timeout)")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="hard stop at once")
    p.add_argument(
        "--timeout", type=seconds_in(0, 3600), metavar="SECONDS", help="wait this long for the guest to power off"
    )
    p = add_command(vm, common, "delete", cmd_vm_delete, "stop and delete VMs (their images can then be deleted)")
    p.add_argument("ids", nargs="+", metavar="ID")
