"""Upload from my computer, in the TUI: the wizard's third source checks the size in bytes with core's
rule and makes a waiting import and its upload link; the upload screen shows one ready command per
tool with the token's URLs, copies them, and follows the bytes written by the real receiver to
`uploaded` and on to `available`; the list says `waiting for upload` and `uploading NN%`, in English
and Chinese."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select
from textual.widgets import Input, ProgressBar, Select, Static

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job, Link
from core.images.images import list_images
from core.importer.job import GIB, size_cap
from core.importer.receiver import open_receiver
from core.importer.upload import submit_upload
from core.links import uploads
from tests.conftest import People
from tests.importkit import make_disk
from tests.tui.conftest import image_list, make_app, move_to, settle, status_of
from tui.i18n import set_language

OS = {"os_type": "Linux", "platform": "CentOS", "arch": "x86_64", "os_version": "7.9"}


@pytest.fixture(autouse=True)
def _english() -> Any:
    yield
    set_language("en")


def text(app: Any, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def fill_upload_form(pilot: Any, name: str, size_bytes: str) -> None:
    await settle(pilot)
    await pilot.press("i")
    await settle(pilot)
    screen = pilot.app.screen
    assert type(screen).__name__ == "ImportWizard"
    screen.query_one("#source", Select).value = "upload"
    await pilot.pause()
    assert screen.query_one("#row-bytes").display and not screen.query_one("#row-file").display
    screen.query_one("#name", Input).value = name
    for field, value in OS.items():
        screen.query_one(f"#{field}", Select).value = value
        await pilot.pause()
    screen.query_one("#size", Input).value = "20"
    screen.query_one("#bytes", Input).value = size_bytes
    await pilot.pause()


def upload_rows(catalog: Catalog, image_id: str) -> tuple[Link, Job]:
    with db.read_session(catalog.engine) as session:
        link = session.exec(select(Link).where(Link.image_id == image_id, Link.kind == uploads.UPLOAD)).one()
        job = uploads.import_job(session, image_id)
        assert job is not None
        return link, job


def write(catalog: Catalog, image_id: str, data: bytes) -> int:
    """Write `data` at the upload's offset with the receiver every protocol writes through."""
    link, job = upload_rows(catalog, image_id)
    receiver = open_receiver(catalog, uploads.receiving_of(link, job), "test")
    try:
        return receiver.write(receiver.offset, data)
    finally:
        receiver.close()


async def until(pilot: Any, condition: Any, timeout: float = 30) -> None:
    """Let the screen's own polling run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen did not catch up"
        await pilot.pause(0.05)


def status_cell(app: Any, image_id: str) -> str:
    return str(image_list(app).table.get_cell(image_id, "status"))


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
async def test_upload_from_my_computer_shows_commands_and_follows_the_bytes_to_available(
    images: Catalog, people: People, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path, "qcow2", pattern=False).read_bytes()
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await fill_upload_form(pilot, "from-my-pc", str(len(disk)))
        assert text(app, "#message-bytes") == ""
        await pilot.press("ctrl+s")
        await settle(pilot)
        screen: Any = app.screen
        assert type(screen).__name__ == "UploadScreen"
        image_id = screen.image["id"]
        assert status_of(images, image_id) == "importing"
        link, job = upload_rows(images, image_id)
        assert (job.state, job.phase, job.bytes_total) == ("waiting", "waiting for upload", len(disk))
        assert link.size == len(disk) and screen.upload["id"] == link.id

        # one ready command per tool, each with the token's URL, copyable like a download link
        upload = screen.upload
        token = upload["ftp"].split("//", 1)[1].split("@", 1)[0]
        shown = {field.key: field.value for field in screen.query("CopyField")}
        assert shown["curl_ftp"] == f"curl -T FILE -C - {upload['ftp']}"
        assert f"-u {token}," in shown["lftp"] and "put -c FILE" in shown["lftp"]
        assert shown["sftp"] == upload["sftp_command"] and f"{token}@" in shown["sftp"]
        assert shown["curl_http"] == f"curl -T FILE {upload['http']}"
        assert shown["offset"] == f"curl -sI {upload['http']}"
        assert shown["curl_http_resume"] == f"curl -C OFFSET -T FILE {upload['http']}"
        assert shown["tus"] == upload["tus"] and token in upload["tus"]
        expires = upload["expires_at"][:16].replace("T", " ")
        await pilot.press("1")
        assert app.clipboard == shown["curl_ftp"]
        await pilot.press("7")
        assert app.clipboard == upload["tus"]
        assert "open: waiting for the file's bytes" in text(app, "#upload-state")
        assert text(app, "#received-text") == f"0 of {len(disk)} bytes received · expires {expires} UTC"

        # the bar moves as the real receiver writes
        half = len(disk) // 2
        write(images, image_id, disk[:half])
        bar = screen.query_one("#received", ProgressBar)
        await until(pilot, lambda: bar.progress == half)
        assert text(app, "#received-text").startswith(f"{half} of {len(disk)} bytes received · expires")
        assert "uploading" in text(app, "#import-state")
        assert "open: receiving the file's bytes" in text(app, "#upload-state")  # no longer "waiting"

        # the last byte: uploaded, then the import goes on to available
        write(images, image_id, disk[half:])
        await until(pilot, lambda: text(app, "#received-text").startswith("uploaded"))
        assert bar.progress == len(disk)
        assert "uploaded" in text(app, "#upload-state")
        app.start_worker()
        await until(pilot, lambda: text(app, "#import-state").startswith("available"), timeout=60)
        assert status_of(images, image_id) == "available"
        assert screen._timer is None  # the import ended: the screen stopped polling
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
        assert status_cell(app, image_id).startswith("available")


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("0", "--bytes must be at least 1"),
        ("12 MB", "--bytes must be the exact size of the file in bytes (e.g. the output of `stat -c %s FILE`)"),
        (
            str(size_cap(20 * GIB) + 1),
            f"--bytes {size_cap(20 * GIB) + 1} is more than a source for a 20 GB image may be"
            f" ({size_cap(20 * GIB)} bytes)",
        ),
    ],
    ids=["zero", "not-a-number", "over-the-cap"],
)
async def test_a_refused_size_shows_core_s_problem_and_creates_nothing(
    images: Catalog, people: People, typed: str, problem: str
) -> None:
    def counts() -> tuple[int, int, int]:
        with db.read_session(images.engine) as session:
            return (
                session.exec(select(func.count()).select_from(Image)).one(),
                session.exec(select(func.count()).select_from(Job)).one(),
                session.exec(select(func.count()).select_from(Link)).one(),
            )

    before = counts()
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await fill_upload_form(pilot, "refused", typed)
        assert text(app, "#message-bytes") == problem
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImportWizard"
        assert text(app, "#message-bytes") == problem
        assert "need attention" in text(app, "#submit-message")
    assert counts() == before


@pytest.mark.parametrize(
    ("language", "size", "waiting", "uploading", "open_words"),
    [
        ("en", (80, 24), "waiting for …", "uploading 43%", "open: receiving the file's bytes"),
        ("en", (120, 40), "waiting for upload", "uploading", "open: receiving the file's bytes"),
        ("zh_CN", (80, 24), "等待上传", "上传中 43%", "已开放：正在接收文件数据"),
        ("zh_CN", (120, 40), "等待上传", "上传中", "已开放：正在接收文件数据"),
    ],
    ids=["en-80x24", "en-120x40", "zh_CN-80x24", "zh_CN-120x40"],
)
async def test_the_list_shows_waiting_for_upload_then_uploading_percent(
    images: Catalog,
    people: People,
    language: str,
    size: tuple[int, int],
    waiting: str,
    uploading: str,
    open_words: str,
) -> None:
    total = 100 << 10
    view = submit_upload(images, people.owner, name="pc-disk", size_bytes=total, size_gb=20, **OS)
    app = make_app(images, people.owner, language=language)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert status_cell(app, view["id"]) == waiting
        write(images, view["id"], b"x" * (43 << 10))
        image_list(app).reload()
        await settle(pilot)
        cell = status_cell(app, view["id"])
        assert cell.startswith(uploading) and cell.endswith("43%")
        # the detail line of the image under the cursor says it too
        move_to(app, view["id"])
        await settle(pilot)
        assert uploading.split()[0] in text(app, "#list-detail")

        # the upload screen in the same language
        from tui.screens.upload import UploadScreen

        app.push_screen(UploadScreen(view))
        await settle(pilot)
        await until(pilot, lambda: open_words in text(app, "#upload-state"))  # 43 KB are in: receiving
        received = "已接收 44032 / 102400 字节" if language == "zh_CN" else "44032 of 102400 bytes received"
        await until(pilot, lambda: text(app, "#received-text").startswith(received))
        assert ("有效期至" if language == "zh_CN" else "expires") in text(app, "#received-text")


async def test_zh_cn_wizard_offers_the_upload_source_and_says_core_s_problem(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await fill_upload_form(pilot, "zh", "0")
        source = app.screen.query_one("#source", Select)
        assert ("从本机上传", "upload") in [(str(label), value) for label, value in source._options]
        assert text(app, "#message-bytes") == "--bytes 至少为 1"
        assert "(Get-Item FILE).Length" in text(app, "#bytes-hint")


async def test_no_upload_link_while_the_gateway_is_gone(images: Catalog, people: People) -> None:
    """The gateway the TUI relied on is gone: an upload link would name ports nobody answers."""
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.gateway_problem = "imagehub serve (pid 4242) has stopped"  # as the gateway watch sets it
        await fill_upload_form(pilot, "from-my-pc", "1048576")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImportWizard"
        refusals = [n.message for n in app._notifications if n.message.startswith("No links while")]
        assert refusals == ["No links while the gateway is not running: imagehub serve (pid 4242) has stopped."]
        assert [i for i in list_images(images, people.owner) if i["name"] == "from-my-pc"] == []
