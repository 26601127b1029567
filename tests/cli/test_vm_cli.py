"""`imagehub vm ...` and `imagehub image capture` end to end: the console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.compute.drivers import QEMU_BINARY, host_arch
from tests.conftest import IMAGEHUB, People
from tests.vmdata import (
    MIB,
    SERIAL_GREETING,
    make_base_image,
    make_greeting_image,
    needs_qemu_system,
    qemu_io,
    qemu_pids,
    read_at,
)

PASSWORD = "Tr1cky-Pass!"


QEMU_TCG = '[compute]\ndriver = "qemu"\naccel = "tcg"\nmemory_mb = 128\nstop_timeout_seconds = 1\n'


def run_vms_with_qemu(config_path: Path) -> None:
    """The commands' VMs really run from now on (qemu under TCG; the tests' disks boot nothing)."""
    config_path.write_text(config_path.read_text().replace('[compute]\ndriver = "none"\n', "") + QEMU_TCG)


def create(cli: Any, image_id: str, *extra: str, account: str = "acme-owner") -> Any:
    return cli("vm", "create", "--image", image_id, "--name", "web-1", "--password", PASSWORD, *extra, account=account)


def test_vm_create_list_show_delete_json(cli: Any, catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)

    made = create(cli, image_id, "--json")
    assert made.code == 0, made.err
    vm = made.json()
    assert {"id", "name", "image_id", "status", "created_at"} <= set(vm)
    # the tests' config has no compute driver: the VM is recorded, never shown as running
    assert (vm["name"], vm["image_id"], vm["status"], vm["driver"]) == ("web-1", image_id, "defined", "none")
    assert vm["id"].startswith("vm-")
    assert PASSWORD not in made.out + made.err

    listed = cli("vm", "list", "--json", account="acme-viewer")
    assert listed.code == 0, listed.err
    assert [(v["id"], v["name"], v["image_id"], v["status"]) for v in listed.json()] == [
        (vm["id"], "web-1", image_id, "defined")
    ]
    assert listed.json()[0]["created_at"] == vm["created_at"]
    assert cli("vm", "list", "--image", image_id, "--json").json()[0]["id"] == vm["id"]
    assert cli("vm", "list", "--json", account="globex-owner").json() == []
    text = cli("vm", "list", account="acme-owner")
    assert text.code == 0 and vm["id"] in text.out and "defined (no compute driver)" in text.out
    assert "running" not in text.out
    assert "defined (no compute driver)" in cli("vm", "show", vm["id"]).out
    assert cli("vm", "show", vm["id"], "--json").json()["id"] == vm["id"]
    again = create(cli, image_id)
    assert again.out.startswith("created vm-") and f"from {image_id} (defined (no compute driver))" in again.out
    assert cli("vm", "delete", again.out.split()[1], account="acme-owner").code == 0

    for action in ("stop", "start"):
        refused = cli("vm", action, vm["id"], account="acme-owner")
        assert refused.code == 5 and f"vm {vm['id']} is only defined" in refused.err, refused.err

    deleted = cli("vm", "delete", vm["id"], account="acme-owner")
    assert (deleted.code, deleted.out) == (0, f"{vm['id']}: deleted\n")
    assert cli("vm", "list", "--json").json() == []
    assert not (catalog.store.vms_dir / vm["id"]).exists()


def test_image_delete_refused_with_exit_5_while_a_vm_exists_allowed_after_vm_delete(
    cli: Any, catalog: Catalog, people: People
) -> None:
    image_id = make_base_image(catalog, people.owner)
    vm = create(cli, image_id, "--json").json()

    refused = cli("image", "delete", image_id, account="acme-owner")
    assert refused.code == 5
    assert f"image {image_id} is used by {vm['id']}" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    shown = cli("image", "show", image_id, "--json").json()
    assert shown["status"] == Status.AVAILABLE and shown["vms"] == [vm["id"]]

    assert cli("vm", "delete", vm["id"], account="acme-owner").code == 0
    done = cli("image", "delete", image_id, account="acme-owner")
    assert done.code == 0, done.err
    assert cli("image", "show", image_id, "--json").json()["status"] == Status.DELETED


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1!", "password is too short; it must have 8 to 30 characters"),
        ("nouppercase", "password must contain at least three of"),
        ("With Space1", "password may contain only letters a-z and A-Z, digits and"),
    ],
)
def test_vm_create_password_rules_exit_2(
    cli: Any, catalog: Catalog, people: People, password: str, message: str
) -> None:
    image_id = make_base_image(catalog, people.owner)
    result = cli("vm", "create", "--image", image_id, "--name", "w", "--password", password, account="acme-owner")
    assert result.code == 2
    assert message in result.err
    assert cli("vm", "list", "--json").json() == []


def test_vm_create_refusals_exit_codes(cli: Any, catalog: Catalog, people: People) -> None:
    available = make_base_image(catalog, people.owner)
    importing = make_base_image(catalog, people.owner, status=Status.IMPORTING)

    other = create(cli, available, account="globex-owner")
    assert other.code == 3
    assert other.err.strip() == f"imagehub: error: image {available} not found"

    viewer = create(cli, available, account="acme-viewer")
    assert viewer.code == 4
    assert f"account acme-viewer may view but not change image {available}" in viewer.err

    busy = create(cli, importing)
    assert busy.code == 5
    assert f"image {importing} is importing; it can be used to create a VM only when available" in busy.err

    missing = cli("vm", "delete", "vm-nothere0", account="acme-owner")
    assert missing.code == 3 and "vm vm-nothere0 not found" in missing.err
    assert cli("vm", "list", "--json").json() == []


def test_vm_create_reads_the_password_from_stdin(cli: Any, catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    config = catalog.settings.config_path
    assert config is not None
    done = subprocess.run(
        [*IMAGEHUB, "vm", "create", "--image", image_id, "--name", "w", "--password-stdin", "--json"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env={"IMAGEHUB_CONFIG": str(config), "IMAGEHUB_ACCOUNT": "acme-owner", "PATH": "/usr/bin:/bin"},
        cwd=config.parent,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("vm-") == 1 and PASSWORD not in done.stdout


@pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)")
def test_image_capture_with_wait(cli: Any, catalog: Catalog, people: People, config_path: Path) -> None:
    run_vms_with_qemu(config_path)
    image_id = make_base_image(catalog, people.owner)
    vm = create(cli, image_id, "--json").json()

    running = cli("image", "capture", "--vm", vm["id"], "--name", "snap", account="acme-owner")
    assert running.code == 5
    assert f"vm {vm['id']} is running; stop it before capturing an image from it" in running.err

    assert cli("vm", "stop", vm["id"], account="acme-owner").code == 0
    overlay = catalog.store.vms_dir / vm["id"] / "disk.qcow2"
    qemu_io(overlay, "qcow2", f"write -P 0x77 {4 * MIB} 4k")

    viewer = cli("image", "capture", "--vm", vm["id"], "--name", "snap", account="acme-viewer")
    assert viewer.code == 4

    done = cli(
        "image", "capture", "--vm", vm["id"], "--name", "snap", "--os-version", "7.6", "--wait", "--json",
        account="acme-owner",
    )  # fmt: skip
    assert done.code == 0, done.err
    image = done.json()
    assert (image["status"], image["os_name"], image["disk_format"]) == ("available", "CentOS 7.6 x86_64", "raw")
    assert image["source"] == f"vm:{vm['id']}"
    captured = Path(catalog.store.image_path(image["id"], "raw"))
    assert read_at(captured, 4 * MIB, 4096) == b"\x77" * 4096

    queued = cli("image", "capture", "--vm", vm["id"], "--name", "later", "--json", account="acme-owner")
    assert queued.code == 0, queued.err
    later = queued.json()
    assert later["status"] == "creating" and isinstance(later["job_id"], int)
    progress = cli("image", "show", later["id"], "--json").json()["progress"]
    assert (progress["kind"], progress["state"], progress["job_id"]) == ("capture", "queued", later["job_id"])
    # While it is queued the VM stays stopped: starting it is refused.
    start = cli("vm", "start", vm["id"], account="acme-owner")
    assert start.code == 5 and f"is being captured into {later['id']}" in start.err


@pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)")
def test_qemu_driver_from_the_command_line(cli: Any, catalog: Catalog, people: People, config_path: Path) -> None:
    run_vms_with_qemu(config_path)
    image_id = make_base_image(catalog, people.owner)
    before = qemu_pids(catalog.settings.data_dir)
    made = create(cli, image_id, "--json")
    assert made.code == 0, made.err
    vm = made.json()
    try:
        assert (vm["driver"], vm["status"]) == ("qemu", "running")
        assert len(qemu_pids(catalog.settings.data_dir) - before) == 1  # it outlived the command that started it
        assert cli("vm", "list", "--json").json()[0]["status"] == "running"
        stopped = cli("vm", "stop", vm["id"], "--json", account="acme-owner")
        assert stopped.code == 0, stopped.err
        assert stopped.json()["status"] == "stopped"
        assert qemu_pids(catalog.settings.data_dir) == before
        assert cli("vm", "start", vm["id"], account="acme-owner").code == 0
        assert len(qemu_pids(catalog.settings.data_dir) - before) == 1
    finally:
        deleted = cli("vm", "delete", vm["id"], account="acme-owner")
    assert deleted.code == 0, deleted.err
    assert qemu_pids(catalog.settings.data_dir) == before


@pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)")
def test_vm_console_prints_the_log_and_follows_it_until_the_vm_stops(
    cli: Any, catalog: Catalog, people: People, config_path: Path
) -> None:
    run_vms_with_qemu(config_path)
    vm = create(cli, make_greeting_image(catalog, people.owner), "--json").json()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env |= {"IMAGEHUB_CONFIG": str(config_path), "IMAGEHUB_ACCOUNT": "acme-owner"}
    follow = subprocess.Popen([*IMAGEHUB, "vm", "console", vm["id"], "--follow"], stdout=subprocess.PIPE, env=env)
    try:
        assert follow.stdout is not None
        seen = b""
        while SERIAL_GREETING not in seen:  # printed as the guest writes it, before the VM stops
            line = follow.stdout.readline()
            assert line, f"the console ended before the greeting: {seen!r}"
            seen += line
        assert cli("vm", "stop", vm["id"], "--force", account="acme-owner").code == 0
        assert follow.wait(timeout=30) == 0  # --follow ends with the VM
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        cli("vm", "delete", vm["id"], account="acme-owner")
    whole = cli("vm", "console", vm["id"], account="acme-owner")
    assert whole.code == 3 and f"vm {vm['id']} not found" in whole.err  # deleted: gone with its folder
    viewer = cli("vm", "console", "vm-nothere0", account="acme-viewer")
    assert viewer.code == 3


def test_init_says_what_runs_vms_here(cli: Any) -> None:
    """`init` (run by `make run`) names the compute driver new VMs get on this host, and why."""
    arch = host_arch()
    pinned = cli("init")
    assert pinned.code == 0 and f"VMs ({arch}) are only recorded, not run: compute.driver is none" in pinned.out
    assert cli("init", "--json").json()["compute_driver"] == "none"
    auto = {"IMAGEHUB_COMPUTE__DRIVER": "auto"}
    absent = cli("init", env=auto | {"PATH": "/nonexistent"})  # a host without qemu-system
    assert f"VMs ({arch}) are only recorded, not run: no {QEMU_BINARY[arch]} here" in absent.out
    if needs_qemu_system:
        tcg = cli("init", env=auto | {"IMAGEHUB_COMPUTE__ACCEL": "tcg"})
        assert f"VMs ({arch}) run with qemu (TCG, no KVM)" in tcg.out
        assert cli("init", "--json", env=auto).json()["compute_driver"] == "qemu"
