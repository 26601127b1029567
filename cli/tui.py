"""`imagehub tui`: the terminal UI (also what bare `imagehub` starts on a terminal)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cli.main import Context, Group, add_command
from core.catalog.storage import SERVE_PID_FILE as SERVE_PID_FILE  # the file serve announces itself in

log = logging.getLogger("imagehub.tui")


def setup_file_logging(data_dir: Path) -> Path | None:
    """Send every log record to data_dir/logs/tui.log and nothing to the terminal."""
    folder = data_dir / "logs"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tui.log"
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        root.addHandler(logging.NullHandler())
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def serve_running(data_dir: Path) -> bool:
    """Whether an `imagehub serve` of this data folder announces itself (then its worker runs the jobs)."""
    from core.links.gateway_status import serve_alive

    return serve_alive(data_dir)


def cmd_tui(ctx: Context) -> int:
    from tui.app import ImagehubApp

    settings = ctx.settings
    log_path = setup_file_logging(settings.data_dir)
    catalog, actor = ctx.catalog, ctx.actor
    worker = {"on": True, "off": False}.get(ctx.args.worker, not serve_running(settings.data_dir))
    # Relying on a serve's worker: if that serve goes away, the app says so and runs the jobs itself.
    watch = ctx.args.worker == "auto" and not worker
    app = ImagehubApp(
        catalog, actor, language=ctx.args.language, embedded_worker=worker, log_path=log_path, watch_gateway=watch
    )
    log.info("tui started by %s (embedded worker: %s)", actor.name, worker)
    try:
        app.run()
    finally:
        app.stop_worker()
    return app.return_code or 0


def build(sub: Any, common: argparse.ArgumentParser, group: Group) -> None:
    p = add_command(sub, common, group.name, cmd_tui, group.help, json_flag=False)
    p.add_argument("--language", choices=["en", "zh_CN"], default=None, help="else config tui.language, else $LANG")
    p.add_argument(
        "--worker",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the job worker inside the TUI (auto: when no `imagehub serve` runs)",
    )
