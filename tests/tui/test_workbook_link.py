"""`x` on the image list (checklist L6): the workbook comes behind a 24-hour link, never a server path;
a real `imagehub serve` hands it to curl over HTTP and FTP, `link list` shows it, revoking ends it."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from core.catalog import db
from core.catalog.catalog import Catalog
from core.links import links
from core.links.workbooks import purge
from core.rules.access import resolve_actor
from tests.gateway.conftest import Gateway, make_catalog, start_server, stop_server
from tests.tui.conftest import add_images, make_app, settle

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    root = Path(tempfile.mkdtemp(prefix="imagehub-wb-"))
    config, catalog = make_catalog(root)
    add_images(catalog)
    proc, (host, http, ftp, sftp) = start_server(config, root, root / "serve.log")
    try:
        yield Gateway(root, config, catalog, proc, host, http, ftp, sftp, root / "serve.log")
    finally:
        code = stop_server(proc)
        catalog.dispose()
        shutil.rmtree(root, ignore_errors=True)
        assert code == 0


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=60)


def workbook_rows(data: bytes) -> list[tuple[Any, ...]]:
    return list(load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))


async def export_with_x(catalog: Catalog, account: str) -> dict[str, Any]:
    with db.read_session(catalog.engine) as session:
        actor = resolve_actor(session, account)
    app = make_app(catalog, actor)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        screen: Any = app.screen
        assert type(screen).__name__ == "WorkbookLinkScreen"
        view = dict(screen.link)
        assert screen.query_one("#field-http").value == view["http"]
        await pilot.press("1")
        assert app.clipboard == view["http"]
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "ImagesScreen"
    return view


async def test_l6_x_gives_a_workbook_link_that_curl_downloads(gateway: Gateway):
    before = set(gateway.root.rglob("*.xlsx"))
    view = await export_with_x(gateway.catalog, "acme-viewer")
    assert view["kind"] == "workbook" and view["image_id"] is None and view["state"] == "active"
    assert view["filename"].startswith("images-") and view["filename"].endswith(".xlsx")
    assert view["http"].startswith(f"http://127.0.0.1:{gateway.http}/d/") and view["http"].endswith(view["filename"])
    assert view["ftp"].startswith("ftp://") and view["sftp_command"].startswith("sftp -P ")
    expires = datetime.fromisoformat(view["expires_at"].replace("Z", "+00:00"))
    assert 86400 - 120 < (expires - datetime.now(UTC)).total_seconds() <= 86400  # 24 hours

    done = curl("-f", view["http"])
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == view["sha256"]
    rows = workbook_rows(done.stdout)
    assert rows[0][:2] == ("Name", "ID")
    assert {r[1] for r in rows[1:]} == {f"img-acme000{i}" for i in range(1, 7)}  # acme only, bin excluded
    checksum = curl("-f", view["http"] + ".sha256")
    assert checksum.stdout.decode() == f"{view['sha256']}  {view['filename']}\n"
    over_ftp = curl(view["ftp"])  # the token is the FTP login, as for an image's link
    assert over_ftp.returncode == 0 and over_ftp.stdout == done.stdout
    if shutil.which("sftp"):  # and the printed sftp command, unchanged but for its known_hosts
        command = view["sftp_command"].split()
        home = gateway.root / "home"
        cmd = [command[0], "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "BatchMode=yes", *command[1:]]
        fetched = subprocess.run(cmd, cwd=home, env=gateway.env, capture_output=True, timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        assert (home / view["filename"]).read_bytes() == done.stdout

    listed = gateway.cli("link", "list", "--json", account="acme-viewer")
    mine = [r for r in json.loads(listed.stdout) if r["id"] == view["id"]]
    assert mine and mine[0]["kind"] == "workbook" and mine[0]["state"] == "active"
    assert not [r for r in json.loads(gateway.cli("link", "list", "--json", account="globex-owner").stdout)]
    # nothing was written beside the user's files or into the store: only the link's own folder
    made = {p for p in set(gateway.root.rglob("*.xlsx")) - before if "home" not in p.parts}
    assert [p.relative_to(gateway.catalog.settings.data_dir).parts[:2] for p in made] == [("workbooks", view["id"])]

    assert gateway.cli("link", "revoke", view["id"], account="acme-viewer").returncode == 0
    refused = curl("-o", "/dev/null", "-w", "%{http_code}", view["http"])
    assert refused.stdout == b"403"
    assert purge(gateway.catalog) == 1 and not made.pop().exists()  # a revoked workbook's file goes


async def test_l6_an_admins_workbook_lists_every_tenant_and_only_admins_see_its_link(gateway: Gateway):
    view = await export_with_x(gateway.catalog, "admin")
    rows = workbook_rows(curl("-f", view["http"]).stdout)
    assert {r[8] for r in rows[1:]} == {"acme", "globex"}
    owner_view = [r["id"] for r in json.loads(gateway.cli("link", "list", "--json", account="acme-owner").stdout)]
    assert view["id"] not in owner_view
    admin_view = [r["id"] for r in json.loads(gateway.cli("link", "list", "--json", account="admin").stdout)]
    assert view["id"] in admin_view
    served = links.validate_token(gateway.catalog, view["http"].split("/d/")[1].split("/")[0])
    assert served.tenant_id is None and served.path.parent.name == view["id"]
