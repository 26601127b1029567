"""`imagehub image ...`: list, show, edit, delete, restore, destroy, export-xlsx, import, download-link, capture.

The last three run in cli.jobs, cli.links and cli.vms (imported only when they run). `image list` on an
up-to-date SQLite catalog reads it with sqlite3 and imports no SQLAlchemy (see `listed_images`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cli.main import (
    MAX_ROWS,
    PROG,
    Context,
    Group,
    add_command,
    add_group,
    emit_json,
    emit_json_array,
    handler_in,
    human_size,
    pretty_json,
    print_table,
    server_path,
    whole_number,
    whole_number_in,
)
from core.catalog.errors import Invalid
from core.catalog.reader import open_sqlite_reader
from core.images.query import SORTABLE, ImageQuery, read_views
from core.rules.actor import Actor, find_actor
from core.rules.display import os_words, size_in_gb, status_word

if TYPE_CHECKING:
    from core.images.images import BatchResult


def visible_images(ctx: Context, query: ImageQuery) -> tuple[Actor, Iterator[dict[str, Any]]]:
    """The caller, and the images it sees (`image list`, `image export-xlsx`). An up-to-date SQLite
    catalog is read through sqlite3, which spares the command SQLAlchemy's import (most of its
    start-up); any other catalog through core.images. The same query (core.images.query) either way;
    anything unusual (no catalog, an older schema) takes the full path, which reports or migrates."""
    settings = ctx.settings
    reader = open_sqlite_reader(settings.database_url, settings.database.busy_timeout_seconds)
    if reader is None:
        from core.images.images import iter_images

        return ctx.actor, iter_images(ctx.catalog, ctx.actor, query)
    try:
        actor = find_actor(reader.rows, ctx.account_name)
    except BaseException:
        reader.close()
        raise

    def views() -> Iterator[dict[str, Any]]:
        try:
            yield from read_views(reader, actor, query)
        finally:
            reader.close()

    return actor, views()


def listed_images(ctx: Context, query: ImageQuery) -> Iterator[dict[str, Any]]:
    return visible_images(ctx, query)[1]


def cmd_image_list(ctx: Context) -> int:
    a = ctx.args
    query = ImageQuery(
        tenant=a.tenant,
        status=a.status,
        text=a.filter,
        sort=a.sort,
        descending=not a.ascending,
        limit=a.limit,
        offset=a.offset,
    )
    if a.json:
        emit_json_array(listed_images(ctx, query), pretty=pretty_json(a))
        return 0
    rows = [
        (
            i["id"],
            i["name"],
            i["os_type"],
            os_words(i["platform"], i["os_version"]),
            i["arch"],
            status_word(i["status"]),
            size_in_gb(i["virtual_size"]),
            i["created_at"],
        )
        for i in listed_images(ctx, query)
    ]
    print_table(rows, ("ID", "NAME", "SYSTEM TYPE", "OS", "ARCH", "STATUS", "SIZE (GB)", "CREATED"))
    return 0


# `image show`: each field in people's words (the TUI's), in this order; `--json` keeps the contract's names.
SHOWN_FIELDS = (
    ("id", "ID"),
    ("name", "name"),
    ("description", "description"),
    ("tenant", "tenant"),
    ("os_type", "system type"),
    ("os", "OS"),
    ("arch", "architecture"),
    ("status", "status"),
    ("error", "reason"),
    ("disk_format", "disk format"),
    ("virtual_size", "size (GB)"),
    ("target_size_gb", "target size (GB)"),
    ("sha256", "SHA-256"),
    ("source", "source"),
    ("created_at", "created"),
    ("updated_at", "updated"),
)
LABEL_WIDTH = 18


def _shown_value(image: dict[str, Any], key: str) -> Any:
    if key == "os":
        return os_words(image["platform"], image["os_version"])
    if key == "status":
        return status_word(image["status"])
    if key == "virtual_size":
        size = image["virtual_size"]
        return None if size is None else f"{size_in_gb(size)} ({size} bytes)"
    return image[key]


def cmd_image_show(ctx: Context) -> int:
    from core.images import images

    image = images.get_image(ctx.catalog, ctx.actor, ctx.args.id)
    if ctx.args.json:
        emit_json(image)
        return 0
    for key, label in SHOWN_FIELDS:
        value = _shown_value(image, key)
        print(f"{label + ':':{LABEL_WIDTH}}{'-' if value in (None, '') else value}")
    if image["vms"]:
        print(f"{'VMs:':{LABEL_WIDTH}}{', '.join(image['vms'])}")
    progress = image.get("progress")
    if progress:
        done, total = progress["bytes_done"], progress["bytes_total"]
        pct = f" {100 * done / total:.0f}%" if total else ""
        phase = progress["phase"] or progress["state"]
        print(f"{'progress:':{LABEL_WIDTH}}{phase}{pct} ({human_size(done)} of {human_size(total)})")
    return 0


def cmd_image_edit(ctx: Context) -> int:
    from core.images import images

    image = images.edit_image(ctx.catalog, ctx.actor, ctx.args.id, name=ctx.args.name, description=ctx.args.description)
    if ctx.args.json:
        emit_json(image)
    else:
        print(f"updated {image['id']}")
    return 0


def _batch(ctx: Context, run: Callable[..., list[BatchResult]], verb: str) -> int:
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
    from core.images import images

    return _batch(ctx, images.delete_images, "deleted (in the recycle bin)")


def cmd_image_restore(ctx: Context) -> int:
    from core.images import images

    return _batch(ctx, images.restore_images, "restored")


def cmd_image_destroy(ctx: Context) -> int:
    from core.images import images

    return _batch(ctx, images.destroy_images, "destroyed")


def cmd_image_export_xlsx(ctx: Context) -> int:
    from core.images.workbook import check_target, checked_first, write_file, write_stream

    a = ctx.args
    query = ImageQuery(tenant=a.tenant, status=a.status, text=a.filter)
    if a.path == "-":
        if a.json:
            raise Invalid("--json cannot be used with '-': standard output carries the workbook")
        if sys.stdout.isatty():
            raise Invalid("standard output is a terminal; redirect it to a file (> images.xlsx)")
        sys.stdout.flush()
        write_stream(checked_first(visible_images(ctx, query)[1]), sys.stdout.buffer)
        return 0
    given = server_path(a.path)
    actor, views = visible_images(ctx, query)
    count = write_file(check_target(ctx.settings, actor, str(given)), checked_first(views))
    path = given.resolve()
    if a.json:
        emit_json({"path": str(path), "rows": count})
    else:
        print(f"wrote {count} images to {path}")
    return 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    image = add_group(sub, common, group.name, group.help)
    p = add_command(image, common, "list", cmd_image_list, "list the images you may see")
    p.add_argument("--tenant")
    p.add_argument("--status", help="one status; deleted images are listed only with --status deleted")
    p.add_argument("--filter", help="name substring or ID prefix")
    p.add_argument("--sort", default="created_at", choices=list(SORTABLE))
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--limit", type=whole_number_in(1, MAX_ROWS))
    p.add_argument("--offset", type=whole_number_in(0, MAX_ROWS), default=0)
    p.add_argument("--pretty", action="store_true", help="indent the JSON (the default on a terminal)")
    add_command(image, common, "show", cmd_image_show, "show one image").add_argument("id")
    p = add_command(image, common, "edit", cmd_image_edit, "change name and/or remark (any status)")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--description")
    for name, handler, text in (
        ("delete", cmd_image_delete, "move images to the recycle bin"),
        ("restore", cmd_image_restore, "restore images from the recycle bin"),
        ("destroy", cmd_image_destroy, "remove images in the recycle bin for good"),
    ):
        add_command(image, common, name, handler, text).add_argument("ids", nargs="+", metavar="ID")
    p = add_command(image, common, "export-xlsx", cmd_image_export_xlsx, "write the image list to an Excel file")
    p.add_argument("path", metavar="PATH|-", help="'-': standard output (the only form over the SSH door)")
    p.add_argument("--tenant")
    p.add_argument("--status")
    p.add_argument("--filter")
    _add_import(image, common)
    _add_download_link(image, common)
    _add_capture(image, common)


def _add_import(image: Any, common: argparse.ArgumentParser) -> None:
    text = "import an image from a URL (http, https, ftp), a file on your computer (--upload) or on this server"
    p = add_command(image, common, "import", handler_in("cli.jobs", "cmd_image_import"), text, json_flag=False)
    p.add_argument("--name", required=True)
    p.add_argument("--description", default="")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="PATH", help="a file on this server")
    source.add_argument(
        "--url",
        metavar="URL",
        help="http://, https:// or ftp://[user:password@]host[:port]/path; - reads it from stdin",
    )
    source.add_argument(
        "--upload",
        action="store_true",
        help="upload a file from your computer: prints an upload link and one command per tool (needs --bytes)",
    )
    p.add_argument("--os-type", required=True, help="Linux or Windows")
    p.add_argument("--arch", required=True, help="x86_64 or aarch64")
    p.add_argument("--platform", required=True, help="CentOS, Ubuntu, Windows")
    p.add_argument("--os-version", required=True)
    p.add_argument("--size-gb", required=True, metavar="GB", help="target size, 20 to 500")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the source file")
    p.add_argument(
        "--bytes",
        metavar="N",
        help="with --upload: the exact size of the file in bytes (`stat -c %%s FILE`, `ls -l FILE`,"
        " PowerShell `(Get-Item FILE).Length`)",
    )
    p.add_argument(
        "--ttl", type=whole_number, metavar="SECONDS", help="with --upload: the link's lifetime (default 24 h)"
    )
    p.add_argument("--tenant", help="tenant of the image (platform admins)")
    p.add_argument("--wait", action="store_true", help="show progress and return when the import has ended")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _add_download_link(image: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        image,
        common,
        "download-link",
        handler_in("cli.links", "cmd_download_link"),
        "make a 24-hour download link",
        description="make a download link",
        json_flag=False,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "--format",
        choices=["qcow2", "raw"],
        help="qcow2: compact, about the data the disk holds; raw: the whole virtual disk, zeros included "
        "(default: links.default_format; an ISO is served as it is)",
    )
    p.add_argument(
        "--ttl",
        type=whole_number,
        metavar="SECONDS",
        help="lifetime in seconds (default and maximum: links.ttl_seconds)",
    )
    p.add_argument("--no-wait", action="store_true", help="return at once while an export or checksum is prepared")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _add_capture(image: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        image,
        common,
        "capture",
        handler_in("cli.vms", "cmd_image_capture"),
        "make a new image from a stopped VM (status creating)",
    )
    p.add_argument("--vm", required=True, metavar="ID")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--os-type", help="default: that of the VM's image (likewise the next four)")
    p.add_argument("--arch")
    p.add_argument("--platform")
    p.add_argument("--os-version")
    p.add_argument("--size-gb")
    p.add_argument("--wait", action="store_true", help="run the capture here and return when it ends")
