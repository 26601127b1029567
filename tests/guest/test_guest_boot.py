"""The spec's password rule in a real guest: a Debian disk (tests/guest/build.py, cached outside the
repository) imported with `image import --file`, a VM made from it with `vm create --password NEW`
on the qemu driver under TCG, logged into on its serial console with NEW (the image's own OLD
password refused), stopped through ACPI, captured, and the capture booted again with another
password. One slow test; `pytest -m "not guest"` leaves it out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IMAGEHUB, REPO
from tests.guest.build import OLD_PASSWORD, build_guest
from tests.guest.console import SerialConsole
from tests.vmdata import needs_qemu_system, qemu_pids

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)"),
]

BOOT_TIMEOUT = 300.0  # seconds from `vm create` to the login prompt, under TCG on a busy 2-core machine
OS_MATRIX = """
[platforms.Debian]
os_type = "Linux"
[platforms.Debian.versions]
x86_64 = ["12"]
"""


def imagehub(config: Path, *args: str, timeout: float = 600) -> Any:
    """One command as the admin; its JSON answer (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")} | {"IMAGEHUB_CONFIG": str(config)}
    done = subprocess.run(
        [*IMAGEHUB, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"imagehub {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout) if "--json" in args else done.stdout


def boot_and_log_in(config: Path, data_dir: Path, vm: dict[str, Any], password: str, refused: str) -> None:
    """The VM's serial console shows a login prompt; `refused` is refused, `password` logs in as root,
    and the guest's host name is the VM's name."""
    assert vm["status"] == "running" and vm["driver"] == "qemu"
    with SerialConsole(data_dir / "vms" / vm["id"] / "console.sock") as console:
        console.expect(r"login: ", timeout=BOOT_TIMEOUT, consume=False)
        assert not console.login("root", refused, timeout=60), console.tail()
        assert console.login("root", password, timeout=60), console.tail()
        assert console.run("hostname", timeout=60).strip() == vm["name"], console.tail()
    shown = imagehub(config, "vm", "console", vm["id"])
    assert "login: " in shown  # what the console showed is in its log too


def test_a_vm_boots_with_the_new_password_and_its_capture_boots_again(tmp_path: Path) -> None:
    guest = build_guest()
    matrix = tmp_path / "os_matrix.toml"
    matrix.write_text(OS_MATRIX)
    config = tmp_path / "imagehub.toml"
    config.write_text(
        '[storage]\ndata_dir = "var"\n'
        f'[images]\nos_matrix = "{matrix}"\n'
        f'[import]\nlocal_roots = ["{guest.parent}"]\n'
        '[compute]\ndriver = "qemu"\naccel = "tcg"\nmemory_mb = 1024\nstop_timeout_seconds = 120\n'
    )
    data_dir = tmp_path / "var"
    imagehub(config, "init")
    imagehub(config, "tenant", "create", "lab")
    before = qemu_pids(data_dir)
    image = imagehub(
        config, "image", "import", "--file", str(guest), "--name", "debian", "--os-type", "Linux",
        "--platform", "Debian", "--os-version", "12", "--arch", "x86_64", "--size-gb", "20", "--tenant", "lab",
        "--wait", "--json",
    )  # fmt: skip
    assert image["status"] == "available", image
    made: list[str] = []
    try:
        vm = imagehub(config, "vm", "create", "--image", image["id"], "--name", "guest-one",
                      "--password", "New-Passw0rd#1", "--json")  # fmt: skip
        made.append(vm["id"])
        boot_and_log_in(config, data_dir, vm, "New-Passw0rd#1", refused=OLD_PASSWORD)

        stopped = imagehub(config, "vm", "stop", vm["id"], "--json", timeout=300)
        assert stopped["status"] == "stopped"
        log = (data_dir / "vms" / vm["id"] / "console.log").read_text(errors="replace")
        assert "reboot: Power down" in log  # the guest powered itself off (ACPI), no hard stop

        captured = imagehub(config, "image", "capture", "--vm", vm["id"], "--name", "debian-captured", "--wait",
                            "--json")  # fmt: skip
        assert captured["status"] == "available", captured
        again = imagehub(config, "vm", "create", "--image", captured["id"], "--name", "guest-two",
                         "--password", "New-Passw0rd#2", "--json")  # fmt: skip
        made.append(again["id"])
        # a new VM is a new instance: cloud-init sets the new password again, and the first one is refused
        boot_and_log_in(config, data_dir, again, "New-Passw0rd#2", refused="New-Passw0rd#1")
    finally:
        for vm_id in made:
            subprocess.run([*IMAGEHUB, "vm", "delete", vm_id], env={**os.environ, "IMAGEHUB_CONFIG": str(config)},
                           cwd=REPO, capture_output=True, timeout=120, check=False)  # fmt: skip
    assert qemu_pids(data_dir) == before
