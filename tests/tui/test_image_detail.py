"""The image detail screen (Enter or v on the list): every field of `image show`, both sizes and both
checksums named for what they cover, the work under way (live), the failure reason, the VMs, links and
history of the image, and each action from there, with core's reason when one does not apply."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rich.console import Console
from sqlmodel import select
from textual.widgets import Input, Static
from textual.widgets._footer import FooterKey

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job, Status
from core.compute.image_detail import image_detail
from core.compute.vms import create_vm, list_vms
from core.images import exports
from core.images.images import edit_image
from core.links.links import create_link
from core.rules.lifecycle import Operation
from tests.conftest import People
from tests.factories import make_image
from tests.tui.conftest import make_app, move_to, settle, status_of
from tui.i18n import set_language
from tui.widgets.format import human_size

PASSWORD = "Passw0rd!x"
SOURCE_SHA = "5f" * 32  # what the import computed of the source, as recorded on the image


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    """The language is process-wide: leave English for the next test."""
    yield
    set_language("en")


def notes(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def section(app: Any, name: str) -> str:
    """The text of one section of the detail as the screen draws it at its width (wrapped lines joined
    by spaces); rendered from the section's content, so that no layout pass has to come first."""
    widget = app.screen.query_one(f"#detail-{name}", Static)
    if not widget.display:
        return ""
    console = Console(width=app.size.width - 4, file=io.StringIO(), color_system=None)  # padding and scrollbar
    with console.capture() as capture:
        console.print(widget.content)
    return " ".join(" ".join(line.split()) for line in capture.get().splitlines()).strip()


def screen_name(app: Any) -> str:
    return type(app.screen).__name__


async def open_detail(pilot: Any, image_id: str, key: str = "enter") -> None:
    await settle(pilot)
    move_to(pilot.app, image_id)
    await pilot.press(key)
    await settle(pilot)
    assert screen_name(pilot.app) == "ImageDetailScreen"


async def until(pilot: Any, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def assert_readable(app: Any, width: int) -> None:
    """Nothing to scroll sideways, and every footer key on screen."""
    scroll = app.screen.query_one("#detail")
    assert scroll.virtual_size.width <= scroll.scrollable_content_region.width
    keys = list(app.screen.query(FooterKey))
    assert keys and all(key.region.width > 0 and key.region.right <= width for key in keys)


def with_checksums(catalog: Catalog, image_id: str = "img-acme0001") -> str:
    """The source's SHA-256 on the image and the stored RAW file's own SHA-256 in its sidecar."""
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        assert image is not None
        image.sha256 = SOURCE_SHA
        session.add(image)
    return exports.write_checksum(catalog.store.image_path(image_id, "raw"))


# ---- opening and leaving --------------------------------------------------------------------------


async def test_enter_and_v_open_the_detail_and_escape_goes_back(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("enter", "v"):
            await open_detail(pilot, "img-acme0002", key)
            assert "db-primary" in section(app, "image")
            assert "img-acme0002" in app.screen.sub_title
            await pilot.press("escape")
            await settle(pilot)
            assert screen_name(app) == "ImagesScreen"


async def test_every_field_of_image_show_and_fits_80x24(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0001")
        shown = section(app, "image")
        for text in ("web-frontend", "img-acme0001", "nginx + app", "acme", "Linux", "CentOS 7.9 x86_64"):
            assert text in shown
        assert "Status available" in shown
        assert "Created 2026-01-02 03:04 UTC" in shown
        sizes = section(app, "sizes")
        assert "Target size GB 20" in sizes
        assert f"Virtual size {human_size(20 * 1024**3)} (21,474,836,480 bytes)" in sizes
        assert f"Stored file RAW, {human_size(512)} (512 bytes)" in sizes
        assert f"Download as RAW {human_size(512)} (512 bytes)" in sizes
        assert "Download as QCOW2 made when a link asks for it" in sizes
        assert section(app, "failure") == "" and section(app, "work") == ""
        assert_readable(app, 80)
        footer = {str(key.description) for key in app.screen.query(FooterKey)}
        assert {"Edit", "Delete", "Download", "Create VM", "VMs", "Back"} <= footer


async def test_both_checksums_each_named_for_what_it_covers(images: Catalog, people: People) -> None:
    served = with_checksums(images)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0001")
        sizes = section(app, "sizes")
        assert f"SHA-256 of the source as imported {SOURCE_SHA}" in sizes
        assert f"SHA-256 of the RAW file a link serves {served}" in sizes
        assert "SHA-256 of the QCOW2 file a link serves computed when the first link is made" in sizes
        assert_readable(app, 80)


async def test_both_sizes_of_a_qcow2_export_beside_the_raw_file(images: Catalog, people: People) -> None:
    """A 1 GiB sparse raw disk and its qcow2 export made by qemu-img: a download of each sends a very
    different number of bytes, and the screen says both before anyone downloads."""
    image_id = make_image(images, people.owner, with_file=True, size_gb=1, name="sparse")
    raw = images.store.image_path(image_id, "raw")
    qcow2 = images.store.export_path(image_id, "qcow2")
    qcow2.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    qcow2_sum = exports.write_checksum(qcow2)
    qcow2_size = qcow2.stat().st_size
    detail = image_detail(images, people.owner, image_id)
    assert [(f.format, f.stored, f.size, f.sha256) for f in detail.served] == [
        ("raw", True, 1024**3, None),
        ("qcow2", False, qcow2_size, qcow2_sum),
    ]
    assert detail.allocated is not None and detail.allocated < 1024**2  # sparse: nearly nothing on disk
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_detail(pilot, image_id)
        sizes = section(app, "sizes")
        gib = human_size(1024**3)
        assert f"Virtual size {gib} (1,073,741,824 bytes)" in sizes
        assert f"Download as RAW {gib} (1,073,741,824 bytes)" in sizes
        assert f"Download as QCOW2 {human_size(qcow2_size)} ({qcow2_size:,} bytes)" in sizes
        assert f"SHA-256 of the QCOW2 file a link serves {qcow2_sum}" in sizes


async def test_the_failure_reason_of_a_failed_import(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0004")
        assert section(app, "failure") == "Why the import failed HTTP 404"
        assert "Status import failed" in section(app, "image")
        assert "import_failed" not in section(app, "image")


async def test_a_running_job_shows_its_phase_and_follows_it_live(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, refresh_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0003")
        work = section(app, "work")
        assert work.startswith("Work under way importing")
        assert f"downloading · 42% · {human_size(42 * 1024**2)} / {human_size(100 * 1024**2)}" in work
        assert section(app, "state") == "work under way: looking again every 0.1 s"
        with db.write_session(images.engine) as session:
            job = session.exec(select(Job).where(Job.image_id == "img-acme0003")).one()
            job.bytes_done = 77 * 1024**2
            session.add(job)
        await until(pilot, lambda: "77%" in section(app, "work"), "the new progress on screen")


async def test_the_refresh_stops_when_nothing_is_under_way(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner, refresh_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0002")
        assert section(app, "state") == "nothing under way · ctrl+r looks again"
        edit_image(images, people.owner, "img-acme0002", name="renamed-elsewhere")
        for _round in range(5):
            await pilot.pause(0.1)
        assert "db-primary" in section(app, "image")  # not looked at again: nothing was under way
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert "renamed-elsewhere" in section(app, "image")


# ---- VMs, links, history ----------------------------------------------------------------------------


async def test_vms_links_and_history_of_the_image(images: Catalog, people: People) -> None:
    vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    link = create_link(images, people.owner, "img-acme0001", "raw").view
    edit_image(images, people.owner, "img-acme0001", description="front end")
    app = make_app(images, people.owner)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_detail(pilot, "img-acme0001")
        vms = section(app, "vms")
        assert vms.startswith("VMs made from this image (1)")
        assert f"app01 {vm['id']} defined (no compute driver)" in vms
        links = section(app, "links")
        assert links.startswith("Links (1)")
        assert f"{link['id']} download RAW" in links
        assert "acme-owner" in links
        history = section(app, "audit")
        assert history.startswith("History (")
        assert "acme-owner edit image done" in history
        assert "acme-owner make link done" in history
        assert "image.edit" not in history and "link.create" not in history
        assert_readable(app, 120)


async def test_a_refusal_by_another_tenant_stays_out_of_the_owners_history(images: Catalog, people: People) -> None:
    from core.catalog.errors import NotFound

    with pytest.raises(NotFound):
        edit_image(images, people.other_owner, "img-acme0001", name="probe")
    edit_image(images, people.manager, "img-acme0001", name="renamed")
    owner_view = image_detail(images, people.owner, "img-acme0001").audit
    admin_view = image_detail(images, people.admin, "img-acme0001").audit
    assert owner_view is not None and admin_view is not None
    assert [e["actor"] for e in owner_view] == ["acme-manager"]
    assert [e["actor"] for e in admin_view] == ["acme-manager", "globex-owner"]


# ---- actions ------------------------------------------------------------------------------------------


async def test_edit_from_the_detail(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0002")
        await pilot.press("e")
        await settle(pilot)
        assert screen_name(app) == "EditScreen"
        app.screen.query_one("#name", Input).value = "db-main"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"
        assert "Saved db-main." in notes(app)
        assert "Name db-main" in section(app, "image")
        assert "edit image" in section(app, "audit")


async def test_delete_to_the_bin_behind_the_confirmation(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0002")
        await pilot.press("d")
        await settle(pilot)
        assert screen_name(app) == "ConfirmScreen"
        await pilot.press("n")
        await settle(pilot)
        assert status_of(images, "img-acme0002") == Status.AVAILABLE
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert status_of(images, "img-acme0002") == Status.DELETED
        assert "Moved db-primary to the recycle bin." in notes(app)
        assert screen_name(app) == "ImagesScreen"
        assert "img-acme0002" not in [row["id"] for row in app.screen.image_list.rows]


async def test_delete_of_an_image_a_vm_uses_is_refused_with_the_reason(images: Catalog, people: People) -> None:
    vm = create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0001")
        assert f"Delete: image img-acme0001 is used by {vm['id']}" in section(app, "actions")
        await pilot.press("d")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"
        assert f"image img-acme0001 is used by {vm['id']}" in notes(app)
        assert status_of(images, "img-acme0001") == Status.AVAILABLE


async def test_download_of_an_importing_image_shows_the_reason(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0003")
        disabled = {str(key.description) for key in app.screen.query(FooterKey) if key.has_class("-disabled")}
        assert disabled == {"Delete", "Download", "Create VM"}
        for key, words in (("g", "it can be downloaded only when"), ("c", "it can be used to create a VM only when")):
            app.clear_notifications()
            await pilot.press(key)
            await settle(pilot)
            assert screen_name(app) == "ImageDetailScreen"
            [note] = notes(app)
            assert note.startswith("image img-acme0003 is importing;") and words in note


async def test_download_link_from_the_detail_then_it_is_listed(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0001")
        assert section(app, "links") == "Links (0) none"
        await pilot.press("g")
        await settle(pilot)
        assert screen_name(app) == "LinkScreen"
        await pilot.press("ctrl+g")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"
        assert section(app, "links").startswith("Links (1)")


async def test_create_vm_from_the_detail_and_the_vms_screen(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0001")
        await pilot.press("c")
        await settle(pilot)
        assert screen_name(app) == "VmCreateScreen"
        app.screen.query_one("#vm-name", Input).value = "web01"
        app.screen.query_one("#password", Input).value = PASSWORD
        app.screen.query_one("#password2", Input).value = PASSWORD
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"
        [vm] = list_vms(images, people.owner)
        assert f"Created VM web01 ({vm['id']}): defined (no compute driver), it does not run here." in notes(app)
        assert f"web01 {vm['id']} defined (no compute driver)" in section(app, "vms")
        await pilot.press("m")
        await settle(pilot)
        assert screen_name(app) == "VmsScreen"
        await pilot.press("escape")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"


# ---- who sees what ------------------------------------------------------------------------------------


async def test_a_viewer_sees_the_image_but_may_change_nothing_nor_read_the_history(
    images: Catalog, people: People
) -> None:
    app = make_app(images, people.viewer)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0001")
        assert "web-frontend" in section(app, "image")
        history = section(app, "audit")
        assert history == "History only platform admins and tenant owners may read the audit trail"
        disabled = {str(key.description) for key in app.screen.query(FooterKey) if key.has_class("-disabled")}
        assert disabled == {"Edit", "Delete", "Create VM"}
        for key in ("e", "d", "c"):
            app.clear_notifications()
            await pilot.press(key)
            await settle(pilot)
            assert screen_name(app) == "ImageDetailScreen"
            assert notes(app) == ["account acme-viewer may view but not change image img-acme0001"]
        await pilot.press("g")  # a viewer may download
        await settle(pilot)
        assert screen_name(app) == "LinkScreen"


def test_core_says_which_actions_apply(images: Catalog, people: People) -> None:
    detail = image_detail(images, people.owner, "img-acme0003")
    assert detail.under_way
    assert detail.allows(Operation.EDIT)
    assert not detail.allows(Operation.DELETE) and not detail.allows(Operation.DOWNLOAD)
    assert detail.image["progress"]["phase"] == "downloading"
    assert not image_detail(images, people.owner, "img-acme0002").under_way


# ---- languages and sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_in_chinese_every_label_is_translated(images: Catalog, people: People, size: tuple[int, int]) -> None:
    with_checksums(images)
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=size) as pilot:
        await open_detail(pilot, "img-acme0001")
        sizes = section(app, "sizes")
        assert "导入时源文件的 SHA-256" in sizes
        assert "链接提供的 RAW 文件的 SHA-256" in sizes
        assert "虚拟大小" in sizes and "以 QCOW2 下载" in sizes
        assert "状态 可用" in section(app, "image")
        assert_readable(app, size[0])


async def test_vms_links_and_history_in_chinese_fit_80x24(images: Catalog, people: People) -> None:
    create_vm(images, people.owner, "img-acme0001", "app01", PASSWORD)
    create_link(images, people.owner, "img-acme0001", "raw")
    app = make_app(images, people.owner, language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "img-acme0001")
        assert section(app, "vms").startswith("由此镜像创建的虚拟机（1）")
        assert "仅定义（无计算驱动）" in section(app, "vms")
        assert section(app, "links").startswith("链接（1）")
        assert section(app, "audit").startswith("历史记录（")
        assert_readable(app, 80)


async def test_the_command_palette_way_answers_with_the_reason_too(images: Catalog, people: People) -> None:
    app = make_app(images, people.owner)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_detail(pilot, "img-acme0003")
        await app.screen.run_action("link")
        await settle(pilot)
        assert screen_name(app) == "ImageDetailScreen"
        [note] = notes(app)
        assert "it can be downloaded only when" in note
