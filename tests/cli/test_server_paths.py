"""Checklist L6 on the server's own command line: a non-admin writes exports only under the data
folder's exports/, the workbook can go to standard output, and SSH keys come capped (16 KiB) from a
regular file or from standard input."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import asyncssh
from openpyxl import load_workbook

from core.accounts import keys
from core.catalog.catalog import Catalog
from core.catalog.models import Status
from tests.conftest import IMAGEHUB, People
from tests.factories import make_image

OUTSIDE = "may write exports only inside"


def run(config_path: Path, *args: str, account: str = "admin", stdin: bytes = b"") -> subprocess.CompletedProcess:
    """The console script with bytes in and out (a workbook on stdout is binary)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env.update(IMAGEHUB_CONFIG=str(config_path), IMAGEHUB_ACCOUNT=account)
    return subprocess.run(
        [*IMAGEHUB, *args], input=stdin, capture_output=True, env=env, cwd=config_path.parent, timeout=120
    )


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_l6_a_non_admin_writes_exports_only_under_exports(catalog: Catalog, people: People, config_path: Path):
    make_image(catalog, people.owner, Status.AVAILABLE, name="acme-web")
    data = catalog.settings.data_dir
    (data / "exports" / "to-store").symlink_to(data / "images")
    before = files_under(data) | files_under(config_path.parent)
    refused = {}
    for target in (
        data / "images" / "x.xlsx",  # the store
        data / "exports" / ".." / "images" / "x.xlsx",
        data / "exports" / "to-store" / "x.xlsx",  # a symlink out of exports/
        config_path.parent / "x.xlsx",
        Path("/nonexistent-folder/x.xlsx"),  # missing or not: the same answer
    ):
        done = run(config_path, "image", "export-xlsx", str(target), account="acme-viewer")
        assert done.returncode == 4, (target, done.stderr)
        refused[target] = done.stderr.decode()
    assert len(set(refused.values())) == 1
    assert OUTSIDE in next(iter(refused.values())) and str(data / "exports") in next(iter(refused.values()))
    assert files_under(data) | files_under(config_path.parent) == before  # nothing left behind

    inside = data / "exports" / "acme.xlsx"
    done = run(config_path, "image", "export-xlsx", str(inside), account="acme-viewer")
    assert done.returncode == 0, done.stderr
    assert [r[0] for r in load_workbook(inside).active.iter_rows(min_row=2, values_only=True)] == ["acme-web"]
    anywhere = config_path.parent / "admin.xlsx"  # a platform admin on the server itself: anywhere
    assert run(config_path, "image", "export-xlsx", str(anywhere)).returncode == 0
    assert anywhere.is_file()


def test_l6_export_to_standard_output(catalog: Catalog, people: People, config_path: Path):
    make_image(catalog, people.owner, Status.AVAILABLE, name="acme-web")
    make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-db")
    done = run(config_path, "image", "export-xlsx", "-", account="acme-viewer")
    assert done.returncode == 0 and done.stderr == b""
    rows = list(load_workbook(io.BytesIO(done.stdout)).active.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:]] == ["acme-web"]
    mixed = run(config_path, "image", "export-xlsx", "-", "--json", account="acme-viewer")
    assert mixed.returncode == 2 and mixed.stdout == b""
    assert "--json cannot be used with '-'" in mixed.stderr.decode()
    refused = run(config_path, "image", "export-xlsx", "-", "--tenant", "globex", account="acme-viewer")
    assert refused.returncode == 3 and refused.stdout == b""  # a refused query writes nothing


def public_key_line(comment: str) -> bytes:
    return asyncssh.generate_private_key("ssh-ed25519", comment=comment).export_public_key()


def test_l6_key_from_standard_input_capped_at_16k(catalog: Catalog, people: People, config_path: Path):
    line = public_key_line("viewer@laptop")
    done = run(config_path, "account", "key", "add", "acme-viewer", "-", "--json", account="acme-viewer", stdin=line)
    assert done.returncode == 0, done.stderr
    listed = keys.list_keys(catalog, people.viewer, "acme-viewer")
    assert [k["comment"] for k in listed] == ["viewer@laptop"]

    padded = public_key_line("x") + b"#" * (16 * 1024)  # 16 KiB + a line: one byte too many is enough
    big = run(config_path, "account", "key", "add", "acme-viewer", "-", account="acme-viewer", stdin=padded)
    assert big.returncode == 2 and "key too large (max 16 KiB)" in big.stderr.decode()
    assert len(keys.list_keys(catalog, people.viewer, "acme-viewer")) == 1  # nothing added


def test_l6_key_file_read_up_to_the_cap_and_only_regular_files(
    catalog: Catalog, people: People, config_path: Path, tmp_path: Path
):
    huge = tmp_path / "big.pub"
    with huge.open("wb") as handle:
        handle.write(public_key_line("big"))
        handle.truncate(512 * 1024**2)  # 512 MiB (sparse): reading it whole would show in the peak RSS
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(config_path)

    def peak_kib(key_file: Path) -> tuple[int, str]:
        """The exit code's message and the child's own peak RSS. A forked child's peak can include the
        pages it shared with this (long-running) pytest before exec, so it is compared with a baseline."""
        child = subprocess.Popen([*IMAGEHUB, "account", "key", "add", "acme-owner", str(key_file)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        assert child.stderr is not None
        message = child.stderr.read().decode()
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        child.stderr.close()
        assert child.returncode == 2, message
        return usage.ru_maxrss, message

    small = tmp_path / "small.pub"
    small.write_bytes(b"not a key")  # refused after reading it: the same path through the program
    baseline, _message = peak_kib(small)
    peak, message = peak_kib(huge)
    assert "key too large (max 16 KiB)" in message
    assert peak < baseline + 64 * 1024, (peak, baseline)  # KiB: far below the file's 512 MiB

    zero = run(config_path, "account", "key", "add", "acme-owner", "/dev/zero")  # would never end
    assert zero.returncode == 2 and "/dev/zero is not a regular file" in zero.stderr.decode()
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)  # no writer: opening must not wait for one
    piped = run(config_path, "account", "key", "add", "acme-owner", str(fifo))
    assert piped.returncode == 2 and "is not a regular file" in piped.stderr.decode()
    assert keys.list_keys(catalog, people.admin, "acme-owner") == []

    good = tmp_path / "owner.pub"
    good.write_bytes(public_key_line("owner@laptop"))
    assert run(config_path, "account", "key", "add", "acme-owner", str(good)).returncode == 0
    assert [k["comment"] for k in keys.list_keys(catalog, people.admin, "acme-owner")] == ["owner@laptop"]
