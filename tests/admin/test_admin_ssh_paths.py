"""Checklist L6 over the admin SSH door: no account names a server path; the workbook comes on standard
output (bytes unchanged through a real OpenSSH client) and a key on standard input."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import asyncssh
import pytest
from openpyxl import load_workbook

from core.accounts import keys
from tests.admin import test_admin_ssh as base
from tests.admin.test_admin_ssh import READ_TIMEOUT, Door
from tests.conftest import People

door = base.door  # the fixture: a door on port 0 with keys for acme-owner and globex-owner

REFUSED = "server paths are not accepted over the SSH door: use '-' for standard input or output"


def add_door_key(d: Door, people: People, account: str, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=account)
    private = tmp_path / f"{account}.key"
    key.write_private_key(str(private))
    private.chmod(0o600)
    key.write_public_key(str(tmp_path / f"{account}.pub"))
    keys.add_key(d.catalog, people.admin, account, tmp_path / f"{account}.pub")
    d.keys[account], d.key_files[account] = key, private


def tree(folder: Path) -> set[tuple[Path, int]]:
    """Every file and its size, less the catalog (the audit trail records each refusal)."""
    return {(p, p.stat().st_size) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("catalog.db")}


async def test_l6_no_command_over_the_door_names_a_server_path(door: Door, people: People, tmp_path: Path):
    add_door_key(door, people, "acme-viewer", tmp_path)
    add_door_key(door, people, "admin", tmp_path)
    data = door.catalog.settings.data_dir
    before = tree(data) | tree(tmp_path)
    attempts = [
        f"image export-xlsx {data / 'images' / 'x.xlsx'}",  # the store, which the service may write
        f"image export-xlsx {data / 'exports' / 'x.xlsx'}",
        f"image export-xlsx {tmp_path / 'x.xlsx'}",
        "image export-xlsx /nonexistent-folder/x.xlsx",  # missing or not: one answer
        "account key add acme-viewer /dev/zero",
        f"account key add acme-viewer {tmp_path / 'acme-viewer.pub'}",
        "account key add acme-viewer /nonexistent/key.pub",
    ]
    for account in ("acme-viewer", "admin"):  # a platform admin too: only on the server itself
        async with door.connect(account) as conn:
            for command in attempts:
                # an `env` request cannot undo what the door tells the child
                done = await conn.run(command, env={"IMAGEHUB_VIA_SSH": "0"}, check=False)
                assert done.exit_status == 2, (account, command, done.stderr)
                assert done.stderr == f"imagehub: error: {REFUSED}\n" and done.stdout == ""
    assert tree(data) | tree(tmp_path) == before
    assert len(keys.list_keys(door.catalog, people.admin, "acme-viewer")) == 1


async def test_l6_import_file_over_the_door_says_nothing_about_paths_outside_import_folders(door: Door):
    fields = "--os-type Linux --arch x86_64 --platform CentOS --os-version 7.9 --size-gb 20"
    answers = set()
    async with door.connect("acme-owner") as conn:
        for given in ("/etc/passwd", "/nonexistent/disk.raw", str(door.catalog.settings.data_dir / "catalog.db")):
            done = await conn.run(f"image import --name x --file {given} {fields}", check=False)
            assert done.exit_status == 2, done.stderr
            answers.add(done.stderr.replace(given, "GIVEN"))
    assert len(answers) == 1 and "is not in an import folder" in answers.pop()


async def test_l6_key_on_standard_input_over_the_door_capped(door: Door, people: People, tmp_path: Path):
    add_door_key(door, people, "acme-viewer", tmp_path)
    line = asyncssh.generate_private_key("ssh-ed25519", comment="viewer@laptop").export_public_key()
    async with door.connect("acme-viewer") as conn:
        added = await conn.run("account key add acme-viewer -", input=line.decode(), check=False)
        assert added.exit_status == 0, added.stderr
        big = await conn.run("account key add acme-viewer -", input=line.decode() + "#" * 17000, check=False)
        assert big.exit_status == 2 and "key too large (max 16 KiB)" in big.stderr
    comments = sorted(k["comment"] for k in keys.list_keys(door.catalog, people.admin, "acme-viewer"))
    assert comments == ["acme-viewer", "viewer@laptop"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
async def test_l6_openssh_client_gets_the_workbook_on_standard_output(door: Door, people: People, tmp_path: Path):
    add_door_key(door, people, "acme-viewer", tmp_path)
    target = tmp_path / "images.xlsx"
    with target.open("wb") as out:
        ssh = await asyncio.create_subprocess_exec(
            "ssh", "-T", "-p", str(door.port), "-i", str(door.key_files["acme-viewer"]), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR", "acme-viewer@127.0.0.1", "image", "export-xlsx", "-",
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(READ_TIMEOUT):
            _, err = await ssh.communicate()
    assert ssh.returncode == 0, err
    rows = list(load_workbook(io.BytesIO(target.read_bytes())).active.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:]] == ["acme-web-server"]  # the viewer's tenant only


async def test_l6_x_in_the_tui_over_the_door_gives_a_workbook_link(door: Door, people: People, tmp_path: Path):
    from core.links import links

    add_door_key(door, people, "acme-viewer", tmp_path)
    async with door.connect("acme-viewer") as conn:
        process = await base.open_tui(conn, size=(140, 40))
        seen = bytearray()
        await base.read_until(process.stdout, b"acme-web-server", seen)
        process.stdin.write(b"x")
        await base.read_until(process.stdout, b"24 hours", seen)
        process.stdin.write(b"\x1b")  # back to the list, then quit
        await base.read_until(process.stdout, b"acme-web-server", bytearray())
        assert await base.quit_tui(process) == 0
    made = [r for r in links.list_links(door.catalog, people.admin) if r["kind"] == "workbook"]
    assert len(made) == 1 and made[0]["created_by"] == "acme-viewer" and made[0]["state"] == "active"
    assert made[0]["id"].encode() in seen and b"/d/" in seen  # the link is what the screen showed
    file = door.catalog.settings.data_dir / "workbooks" / made[0]["id"] / made[0]["filename"]
    rows = list(load_workbook(file).active.iter_rows(min_row=2, values_only=True))
    assert [r[0] for r in rows] == ["acme-web-server"]
