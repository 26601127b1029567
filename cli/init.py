"""`imagehub init`: the catalog, store, signing secret and admin account (`--demo`: sample images)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import Context, Group, add_command, emit_json


def cmd_init(ctx: Context) -> int:
    from core.catalog import db
    from core.compute.drivers import describe_driver, driver_for, host_arch
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
                "compute_driver": driver_for(ctx.settings.compute, host_arch()),
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
    print(describe_driver(ctx.settings.compute))
    return 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    p = add_command(sub, common, group.name, cmd_init, group.help)
    p.add_argument("--demo", action="store_true", help="add a demo tenant with sample images")
