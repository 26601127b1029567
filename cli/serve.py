"""`imagehub serve`: the download gateway (HTTP, FTP, SFTP) and the job worker, until stopped."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import Context, extend


def cmd_serve(ctx: Context) -> int:
    from gateway.server import run

    return run(ctx.catalog)


@extend
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        help="run the download gateway and the job worker",
        description="run the HTTP, FTP and SFTP download servers and the job worker until SIGTERM/SIGINT",
        parents=[common],
    )
    p.set_defaults(handler=cmd_serve)
