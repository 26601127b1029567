"""The TUI's embedded worker: runs jobs while the TUI is open, gives unfinished ones back on quit,
and stays off when an `imagehub serve` of the same data folder is running."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.tui import serve_running
from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Job
from core.jobs import jobs
from core.jobs.context import JobContext
from core.jobs.handlers import HANDLERS
from tests.conftest import People
from tests.tui.conftest import make_app, settle


class Endless:
    """A job that reports progress until its worker stops."""

    kind = "tui-test-endless"
    started = threading.Event()

    def run(self, ctx: JobContext) -> None:
        self.started.set()
        done = 0
        while True:
            done += 1
            ctx.progress("running", done, 1000, force=True)
            time.sleep(0.05)

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        pass


@pytest.fixture
def endless(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endless]:
    handler = Endless()
    monkeypatch.setitem(HANDLERS, handler.kind, handler)  # the app's worker reads the table itself
    yield handler


async def test_embedded_worker_runs_jobs_and_gives_them_back_on_quit(
    images: Catalog, people: People, endless: Endless
) -> None:
    with db.write_session(images.engine) as session:
        job_id = jobs.submit(session, endless.kind, None).id
    app = make_app(images, people.owner, embedded_worker=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert await_event(endless.started, 10)
        job = jobs.get(images.engine, job_id)
        assert job is not None and job.state == "running" and job.lease_owner == app.worker.owner
        await pilot.press("q")
    job = jobs.get(images.engine, job_id)
    assert job is not None and job.state == "queued" and job.lease_owner is None
    assert job.bytes_done > 0  # progress kept for the next worker


def await_event(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


def test_serve_running_follows_the_pid_file(tmp_path: Path) -> None:
    from cli.tui import SERVE_PID_FILE
    from gateway.server import SERVE_PID_FILE as PID_FILE

    assert SERVE_PID_FILE == PID_FILE == "serve.pid"  # the one file `imagehub serve` writes
    assert not serve_running(tmp_path)
    for never_written in ("run/serve.pid", "gateway.pid", "run/gateway.pid"):
        (tmp_path / never_written).parent.mkdir(exist_ok=True)
        (tmp_path / never_written).write_text(f"{os.getpid()}\n")
    assert not serve_running(tmp_path)
    (tmp_path / "serve.pid").write_text(f"{os.getpid()}\n")
    assert serve_running(tmp_path)
    (tmp_path / "serve.pid").write_text("999999999\n")
    assert not serve_running(tmp_path)


async def test_live_refresh_keeps_cursor_and_selection(images: Catalog, people: People) -> None:
    from sqlmodel import select

    from tests.tui.conftest import image_list, move_to

    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        move_to(app, "img-acme0002")
        await pilot.press("space")
        move_to(app, "img-acme0003")
        row_before = image_list(app).table.cursor_row
        with db.write_session(images.engine) as session:
            job = session.exec(select(Job).where(Job.image_id == "img-acme0003")).one()
            job.bytes_done = 90 * 1024**2
            session.add(job)
        image_list(app).reload()
        await settle(pilot)
        assert image_list(app).table.cursor_row == row_before
        assert set(image_list(app).selected) == {"img-acme0002"}
        cell = image_list(app).table.get_cell("img-acme0003", "status")
        assert "90%" in str(cell)


async def test_an_import_that_ends_is_announced(images: Catalog, people: People) -> None:
    from core.catalog.models import Image
    from tests.tui.conftest import image_list

    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        with db.write_session(images.engine) as session:
            image = session.get(Image, "img-acme0003")
            assert image is not None
            image.status = "available"
            session.add(image)
        image_list(app).reload()
        await settle(pilot)
        assert any(n.message == "win-iis is now available." for n in app._notifications)
