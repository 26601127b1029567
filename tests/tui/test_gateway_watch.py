"""The TUI relying on a real `imagehub serve` notices when it dies: a banner on the screen says why,
and the TUI's own worker takes over the jobs."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.settings import load_settings
from core.links.gateway_status import gateway_status
from core.rules.access import resolve_actor
from core.setup.bootstrap import initialise
from tests.conftest import write_config
from tests.gateway.conftest import GATEWAY_CONFIG, start_server
from tests.tui.conftest import make_app, settle


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Catalog, subprocess.Popen[str]]]:
    """A catalog and a real `imagehub serve` of it on free ports."""
    config = write_config(tmp_path, GATEWAY_CONFIG)
    catalog, _ = initialise(load_settings(config))
    proc, _ = start_server(config, tmp_path, tmp_path / "serve.log")
    try:
        yield catalog, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        catalog.dispose()


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 30) -> bool:
    """Let the app run (its timers, its workers) until `condition` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await pilot.pause(0.05)
    return True


def banners(app: Any) -> list[str]:
    return [n.message for n in app._notifications if n.message.startswith("gateway not running: ")]


def shown_toasts(app: Any) -> str:
    return " ".join(str(toast.render()) for toast in app.screen.query("Toast"))


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (signal.SIGKILL, "imagehub serve (pid {pid}) has stopped"),  # serve.pid left behind
        (signal.SIGTERM, "no imagehub serve runs for"),  # a clean stop removes serve.pid
    ],
    ids=["killed", "stopped"],
)
async def test_the_tui_notices_its_gateway_dying(
    served: tuple[Catalog, subprocess.Popen[str]], sig: int, reason: str
) -> None:
    catalog, proc = served
    assert gateway_status(catalog.settings).running
    with db.read_session(catalog.engine) as session:
        admin = resolve_actor(session, "admin")
    app = make_app(catalog, admin, watch_gateway=True, gateway_check_seconds=0.1)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        await pilot.pause(0.3)  # a few checks while serve runs: nothing said, no worker here
        assert banners(app) == [] and app.worker is None
        proc.send_signal(sig)
        proc.wait(30)
        assert await wait_until(pilot, lambda: bool(banners(app)))
        (banner,) = banners(app)
        assert reason.format(pid=proc.pid) in banner and "Jobs now run in this TUI" in banner
        assert app.gateway_problem and app.worker is not None  # the embedded worker took over
        assert await wait_until(pilot, lambda: "gateway not running" in shown_toasts(app))  # on the screen
        await pilot.press("q")


async def test_no_download_links_once_the_gateway_is_gone(served: tuple[Catalog, subprocess.Popen[str]]) -> None:
    from sqlmodel import select

    from core.accounts.accounts import create_tenant
    from core.catalog.models import Link
    from tests.tui.conftest import add_images
    from tui.screens.link import LinkScreen

    catalog, proc = served
    with db.read_session(catalog.engine) as session:
        admin = resolve_actor(session, "admin")
    for tenant in ("acme", "globex"):
        create_tenant(catalog, admin, tenant)
    add_images(catalog)
    app = make_app(catalog, admin, watch_gateway=True, gateway_check_seconds=0.1)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        proc.kill()
        proc.wait(30)
        assert await wait_until(pilot, lambda: bool(banners(app)))
        app.push_screen(LinkScreen({"id": "img-acme0001", "name": "web-frontend"}))
        await settle(pilot)
        await pilot.press("ctrl+g")
        await settle(pilot)
        refusals = [n.message for n in app._notifications if n.message.startswith("No download links while")]
        assert refusals and f"imagehub serve (pid {proc.pid}) has stopped" in refusals[0]
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("x")  # the workbook link: refused the same way
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        refusals = [n.message for n in app._notifications if n.message.startswith("No links while")]
        assert refusals and f"imagehub serve (pid {proc.pid}) has stopped" in refusals[0]
        with db.read_session(catalog.engine) as session:
            assert session.exec(select(Link)).first() is None  # no link, so no URL, was made
        await pilot.press("q")
