"""`imagehub serve`: the download gateway (HTTP, FTP, SFTP) and the job worker, until stopped."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import Context, Group, add_command


def cmd_serve(ctx: Context) -> int:
    from gateway.server import run

    return run(ctx.catalog)


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    description = "run the HTTP, FTP and SFTP download servers and the job worker until SIGTERM/SIGINT"
    add_command(sub, common, group.name, cmd_serve, group.help, description=description, json_flag=False)
