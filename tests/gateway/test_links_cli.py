"""Links through the command line and core: the JSON contract, TTL bounds, who may see and revoke, what the
catalog keeps, tokens kept out of logs, and the format served (qcow2 unless raw is asked for or configured)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog.errors import Conflict, Forbidden, Invalid, NotFound
from core.links import links
from tests.gateway.conftest import Gateway

CONTRACT_FIELDS = {
    "id",
    "image_id",
    "format",
    "filename",
    "sha256",
    "expires_at",
    "http",
    "ftp",
    "sftp",
    "sftp_command",
}


def test_download_link_json_matches_the_contract_and_urls_work(gw: Gateway, tmp_path) -> None:
    image_id = gw.image(size=200_000)
    done = gw.cli("image", "download-link", image_id, "--format", "raw", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert set(view) >= CONTRACT_FIELDS
    assert view["image_id"] == image_id and view["format"] == "raw" and view["state"] == "active"
    assert view["filename"] == f"{image_id}.raw"
    assert re.fullmatch(r"[0-9a-f]{64}", view["sha256"])
    token = view["http"].split("/d/", 1)[1].split("/", 1)[0]
    assert re.fullmatch(r"[A-Za-z0-9._-]+", token), "the token must be URL-safe and a valid user name"
    assert view["ftp"] == f"ftp://{token}@{gw.host}:{gw.ftp}/{view['filename']}"
    assert view["sftp"] == f"sftp://{token}@{gw.host}:{gw.sftp}/{view['filename']}"
    assert f"-P {gw.sftp}" in view["sftp_command"] and f"{token}@{gw.host}:{view['filename']}" in view["sftp_command"]
    out = tmp_path / "file"
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), view["http"]], check=True)
    assert links.validate_token(gw.catalog, token).sha256 == view["sha256"]

    listed = gw.cli("link", "list", "--json")
    assert listed.returncode == 0
    row = next(r for r in json.loads(listed.stdout) if r["id"] == view["id"])
    assert row["state"] == "active" and "http" not in row, "a listing never shows tokens"

    text = gw.cli("link", "list")
    assert view["id"] in text.stdout and "EXPIRES" in text.stdout
    revoked = gw.cli("link", "revoke", view["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    row = next(r for r in json.loads(gw.cli("link", "list", "--json").stdout) if r["id"] == view["id"])
    assert row["state"] == "revoked" and row["revoked_at"]


def test_qcow2_link_made_by_export_job(gw: Gateway) -> None:
    image_id = gw.image(size=300_000)
    done = gw.cli("image", "download-link", image_id, "--format", "qcow2", "--ttl", "600", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["format"] == "qcow2" and view["filename"] == f"{image_id}.qcow2" and view["sha256"]
    assert (gw.catalog.store.exports_dir / view["filename"]).is_file()


def test_ttl_bounds_and_bad_values(gw: Gateway) -> None:
    image_id = gw.image(size=1000)
    for ttl in ("0", "-5", "86401"):
        done = gw.cli("image", "download-link", image_id, "--ttl", ttl)
        assert done.returncode == 2, (ttl, done.stderr)
        assert "--ttl must be between 1 and 86400" in done.stderr
    done = gw.cli("image", "download-link", image_id, "--format", "vmdk")
    assert done.returncode == 2
    done = gw.cli("image", "download-link", "img-doesnotexist")
    assert done.returncode == 3 and "not found" in done.stderr


def test_links_follow_tenants_and_permissions(gw: Gateway) -> None:
    image_id = gw.image(size=1000)
    with pytest.raises(NotFound):
        links.create_link(gw.catalog, gw.actor("globex-owner"), image_id)
    made = links.create_link(gw.catalog, gw.actor("acme-owner"), image_id)
    with pytest.raises(NotFound):
        links.revoke_link(gw.catalog, gw.actor("globex-owner"), made.view["id"])
    assert made.view["id"] not in {r["id"] for r in links.list_links(gw.catalog, gw.actor("globex-owner"))}
    # A viewer may make links (downloading is viewing) but not revoke other people's.
    own = links.create_link(gw.catalog, gw.actor("acme-viewer"), image_id)
    with pytest.raises(Forbidden):
        links.revoke_link(gw.catalog, gw.actor("acme-viewer"), made.view["id"])
    links.revoke_link(gw.catalog, gw.actor("acme-viewer"), own.view["id"])
    with pytest.raises(Invalid):
        links.create_link(gw.catalog, gw.actor("acme-owner"), image_id, "raw", 86401)


def test_only_available_images_get_links(gw: Gateway) -> None:
    from core.images import images

    image_id = gw.image(size=1000)
    assert images.delete_images(gw.catalog, gw.actor("acme-owner"), [image_id])[0].ok
    with pytest.raises(Conflict, match="downloaded only when available"):
        links.create_link(gw.catalog, gw.actor("acme-owner"), image_id)


def test_catalog_keeps_a_hash_never_the_token(gw: Gateway) -> None:
    link = gw.link(gw.image(size=1000))
    secret_part = link.token.split(".")[1]
    data_dir = gw.catalog.settings.data_dir
    for path in data_dir.glob("catalog.db*"):
        assert secret_part.encode() not in path.read_bytes(), path
    assert links.token_hash(link.token) in {row for row in _token_hashes(gw)}, "the catalog holds SHA-256(token)"


def _token_hashes(gw: Gateway) -> set[str]:
    from sqlmodel import select

    from core.catalog import db
    from core.catalog.models import Link as LinkRow

    with db.read_session(gw.catalog.engine) as session:
        return {row.token_hash for row in session.exec(select(LinkRow))}


def test_tokens_never_reach_the_logs(gw: Gateway, tmp_path) -> None:
    link = gw.link(gw.image(size=1000))
    subprocess.run(["curl", "-sS", "-o", str(tmp_path / "a"), link.http], check=True)
    subprocess.run(["curl", "-sS", "-o", str(tmp_path / "b"), link.ftp], check=True)
    subprocess.run(["curl", "-sS", "-k", "-o", str(tmp_path / "c"), link.sftp], check=True)
    subprocess.run(["curl", "-sS", "-o", "/dev/null", link.http.replace("/d/", "/d/x")], check=True)
    log = gw.log_text()
    for proto in ("http", "ftp", "sftp"):
        assert re.search(rf"link={link.id} proto={proto} client=127\.0\.0\.1:\d+ file=\S+ bytes=1000 status=", log), (
            proto
        )
    secret_part = link.token.split(".")[1]
    assert secret_part not in log


def test_exports_are_removed_with_the_image(gw: Gateway) -> None:
    from core.images import images

    image_id = gw.image(size=100_000)
    qcow = gw.link(image_id, "qcow2")
    export = gw.catalog.store.exports_dir / qcow.filename
    assert export.is_file() and export.with_name(export.name + ".sha256").is_file()
    owner = gw.actor("acme-owner")
    assert images.delete_images(gw.catalog, owner, [image_id])[0].ok
    assert images.destroy_images(gw.catalog, owner, [image_id])[0].ok
    assert not gw.catalog.store.files_of_image(image_id)


def test_failed_preparation_exits_1_and_leaves_no_usable_link(gw: Gateway) -> None:
    image_id = gw.image(size=1000)
    gw.catalog.store.image_path(image_id, "raw").unlink()  # the stored file is gone
    done = gw.cli("image", "download-link", image_id, "--format", "qcow2", "--json")
    assert done.returncode == 1
    assert "preparing the download failed" in done.stderr and "missing" in done.stderr
    assert done.stdout == ""
    # the file is prepared before the link is made: a failed preparation makes no link at all
    assert links.list_links(gw.catalog, gw.actor("acme-owner"), image_id) == []
    assert not list(gw.catalog.store.staging_dir.glob(f"{image_id}*"))


def test_a_links_lifetime_starts_once_its_file_is_ready(gw: Gateway) -> None:
    """The export and checksum are made first, then the link: a short --ttl is not spent waiting."""
    from core.catalog.clock import iso
    from core.jobs import jobs

    image_id = gw.image(size=3_000_001)
    done = gw.cli("image", "download-link", image_id, "--format", "qcow2", "--ttl", "30", "--json")
    assert done.returncode == 0, done.stderr
    link = json.loads(done.stdout)
    assert link["state"] == "active" and link["sha256"]
    (row,) = links.list_links(gw.catalog, gw.actor("acme-owner"), image_id)
    export = jobs.latest_for_image(gw.catalog.engine, image_id)
    assert export.kind == "export" and export.state == jobs.DONE
    assert row["created_at"] >= iso(export.finished_at)


def _cli_with(gw: Gateway, *args: str, config: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The command line as acme-owner, with another config file or more environment variables."""
    full = gw.env | {"IMAGEHUB_ACCOUNT": "acme-owner"} | env
    if config is not None:
        full["IMAGEHUB_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=full, cwd=gw.root, timeout=60
    )


def _config_with(gw: Gateway, name: str, links_table: str) -> Path:
    """A config beside the gateway's (the same catalog) with a [links] table of its own."""
    path = gw.root / name
    path.write_text(gw.config.read_text() + "\n[links]\n" + links_table)
    return path


def test_a_new_link_serves_qcow2_and_its_checksum_is_the_served_files(gw: Gateway, tmp_path: Path) -> None:
    image_id = gw.image(size=3 << 20)
    done = gw.cli("image", "download-link", image_id, "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["format"] == "qcow2" and view["filename"] == f"{image_id}.qcow2" and view["state"] == "active"
    assert view["virtual_size"] == 3 << 20
    out = tmp_path / view["filename"]
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), view["http"]], check=True)
    sums = subprocess.run(
        ["curl", "-sS", "--fail", view["http"] + ".sha256"], check=True, capture_output=True, text=True
    )
    assert sums.stdout == f"{view['sha256']}  {view['filename']}\n"
    (tmp_path / (view["filename"] + ".sha256")).write_text(sums.stdout)
    checked = subprocess.run(
        ["sha256sum", "-c", view["filename"] + ".sha256"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout == f"{view['filename']}: OK\n", checked
    assert view["size"] == out.stat().st_size
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(out)], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 3 << 20
    export = gw.catalog.store.exports_dir / view["filename"]
    assert export.with_name(export.name + ".sha256").read_text() == sums.stdout


def test_raw_on_request_or_by_configuration(gw: Gateway) -> None:
    image_id = gw.image(size=100_000)
    raw_default = _config_with(gw, "raw-default.toml", 'default_format = "raw"\n')
    for how in (
        _cli_with(gw, "image", "download-link", image_id, "--json", config=raw_default),
        _cli_with(gw, "image", "download-link", image_id, "--json", IMAGEHUB_LINKS__DEFAULT_FORMAT="raw"),
        gw.cli("image", "download-link", image_id, "--format", "raw", "--json"),
    ):
        assert how.returncode == 0, how.stderr
        view = json.loads(how.stdout)
        assert view["format"] == "raw" and view["filename"] == f"{image_id}.raw" and view["state"] == "active"
        assert view["size"] == view["virtual_size"] == 100_000
    asked = _cli_with(gw, "image", "download-link", image_id, "--format", "qcow2", "--json", config=raw_default)
    assert asked.returncode == 0 and json.loads(asked.stdout)["format"] == "qcow2", asked.stderr


def test_an_unknown_default_format_is_refused_at_load(gw: Gateway) -> None:
    image_id = gw.image(size=1000)
    wrong = _config_with(gw, "vmdk-default.toml", 'default_format = "vmdk"\n')
    for refused in (
        _cli_with(gw, "image", "download-link", image_id, config=wrong),
        _cli_with(gw, "image", "download-link", image_id, IMAGEHUB_LINKS__DEFAULT_FORMAT="vmdk"),
    ):
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.strip().splitlines() == [
            "imagehub: error: invalid configuration: links.default_format: Input should be 'qcow2' or 'raw'"
        ], refused.stderr
    assert links.list_links(gw.catalog, gw.actor("acme-owner"), image_id) == []
