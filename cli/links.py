"""`imagehub image download-link` (its parser is in cli.images), `imagehub link list|show|revoke`."""

from __future__ import annotations

import argparse
from typing import Any

from cli.jobs import wait_for_job
from cli.main import Context, Group, add_command, add_group, emit_json, human_size, print_table
from core.catalog.errors import Failed
from core.jobs import jobs
from core.links import links


def _prepare(ctx: Context, image_id: str, fmt: str | None) -> None:
    """Make the file ready (export, checksum) before the link exists, so its lifetime starts usable."""
    job_id = links.prepare(ctx.catalog, ctx.actor, image_id, fmt)
    if job_id is None:
        return
    job = wait_for_job(ctx, job_id)
    if job is None or job.state != jobs.DONE:
        reason = job.error if job is not None and job.error else (job.state if job is not None else "gone")
        raise Failed(f"preparing the download failed: {reason}")


def cmd_download_link(ctx: Context) -> int:
    a = ctx.args
    links.check_ttl(ctx.catalog, a.ttl)
    if not a.no_wait:
        _prepare(ctx, a.id, a.format)
    created = links.create_link(ctx.catalog, ctx.actor, a.id, a.format, a.ttl)
    view = created.view
    if a.json:
        emit_json(view)
        return 0
    print(f"link {view['id']} to {view['image_id']} ({view['format']}), valid until {view['expires_at']}")
    if view["sha256"] is None:
        print("the file is being prepared; the link answers once it is ready (see `imagehub link list`)")
    for key in ("filename", "sha256", "size", "virtual_size", "http", "ftp", "sftp", "sftp_command"):
        value = view.get(key)
        if key in ("size", "virtual_size") and value is not None:
            value = f"{human_size(value)} ({value} bytes)"
        print(f"{key + ':':14}{'-' if value is None else value}")
    return 0


def _moved(view: dict[str, Any]) -> str:
    """Bytes served (download and workbook links), or received of the upload's size."""
    if view["kind"] == "upload":
        size = view["size"] or 0
        pct = f" ({100 * view['bytes_received'] // size}%)" if size else ""
        return f"{human_size(view['bytes_received'])} of {human_size(size)}{pct}"
    return human_size(view["bytes_served"])


def cmd_link_list(ctx: Context) -> int:
    rows = links.list_links(ctx.catalog, ctx.actor, ctx.args.image)
    if ctx.args.json:
        emit_json(rows)
        return 0
    print_table(
        [
            (
                r["id"],
                r["kind"],
                r["image_id"] or "-",  # a workbook link names no image
                r["format"] or "-",
                r["state"],
                r["expires_at"],
                _moved(r),
                r["created_by"],
            )
            for r in rows
        ],
        ("ID", "KIND", "IMAGE", "FORMAT", "STATE", "EXPIRES", "BYTES", "BY"),
    )
    return 0


def cmd_link_show(ctx: Context) -> int:
    """One link's fields and its state (the gateway's own verdict); never its token or URLs, which only
    the maker received."""
    view = links.get_link(ctx.catalog, ctx.actor, ctx.args.link_id)
    if ctx.args.json:
        emit_json(view)
        return 0
    for key, value in view.items():
        shown = (
            f"{human_size(value)} ({value} bytes)"
            if key in ("size", "virtual_size", "bytes_served", "bytes_received") and value is not None
            else value
        )
        print(f"{key + ':':14}{'-' if shown is None else shown}")
    return 0


def cmd_link_revoke(ctx: Context) -> int:
    view = links.revoke_link(ctx.catalog, ctx.actor, ctx.args.link_id)
    if ctx.args.json:
        emit_json(view)
    else:
        ended = " (upload cancelled)" if view["kind"] == "upload" and view["state"] == "revoked" else ""
        print(f"{view['id']}: revoked{ended}")
    return 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    link = add_group(sub, common, group.name, group.help)
    p = add_command(link, common, "list", cmd_link_list, "list download and upload links", json_flag=False)
    p.add_argument("--image", metavar="ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = add_command(link, common, "show", cmd_link_show, "show one link and its state", json_flag=False)
    p.add_argument("link_id", metavar="LINK_ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = add_command(
        link,
        common,
        "revoke",
        cmd_link_revoke,
        "revoke a link",
        description="revoke a link; its transfers stop (an upload's import ends: upload cancelled)",
        json_flag=False,
    )
    p.add_argument("link_id", metavar="LINK_ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")
