"""A real guest booted by imagehub against the same guest booted by a plain qemu command line.

The Debian test guest (tests/guest/build.py, built once and cached outside the repository) is
imported into a throwaway catalog. Then, for TCG and (where /dev/kvm is usable) KVM:
- imagehub: the time from `vm create` (core.compute.vms.create_vm, as the CLI calls it) to the
  serial console's `login:` prompt, and to the first successful root login with the new password;
- plain qemu: the same disk (a qcow2 overlay on the same imported image) and the same kind of
  cloud-init seed, booted by `qemu-system-x86_64 -accel ... -machine q35 -m 1024` with the same
  devices, the same two times.
Prints the seconds and the ratio imagehub/plain beside its target (1.1). Each case runs `--repeat`
times (best kept). Every VM and qemu is stopped after, by PID.
Run: .venv/bin/python bench/guest.py [--repeat 2] [--only tcg]
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.accounts.accounts import create_tenant  # noqa: E402
from core.catalog import db  # noqa: E402
from core.catalog.catalog import Catalog  # noqa: E402
from core.catalog.settings import ComputeSettings, load_settings  # noqa: E402
from core.compute import vms  # noqa: E402
from core.compute.drivers import kvm_usable  # noqa: E402
from core.compute.seed import seed_data, write_seed_iso  # noqa: E402
from core.disk import qemu  # noqa: E402
from core.importer.submit import submit_import  # noqa: E402
from core.jobs.worker import Worker  # noqa: E402
from core.rules.access import Actor, resolve_actor  # noqa: E402
from core.setup.bootstrap import initialise  # noqa: E402
from tests.guest.build import build_guest  # noqa: E402
from tests.guest.console import ConsoleTimeout, SerialConsole  # noqa: E402

TARGET = 1.1
PASSWORD = "Bench-Passw0rd#1"
BOOT_TIMEOUT = 300.0
OS_MATRIX = '[platforms.Debian]\nos_type = "Linux"\n[platforms.Debian.versions]\nx86_64 = ["12"]\n'


def admin_of(catalog: Catalog) -> Actor:
    with db.read_session(catalog.engine) as session:
        return resolve_actor(session, "admin")


def to_login(socket_path: Path, started: float) -> tuple[float, float]:
    """Seconds from `started` to the login prompt and to a successful root login."""
    with SerialConsole(socket_path, connect_timeout=60) as console:
        console.expect(r"login: ", timeout=BOOT_TIMEOUT, consume=False)
        prompt = time.perf_counter() - started
        if not console.login("root", PASSWORD, timeout=120):
            raise SystemExit(f"login refused:\n{console.tail()}")
        return prompt, time.perf_counter() - started


def imagehub_boot(folder: Path, accel: str, image_id: str) -> tuple[float, float]:
    settings = load_settings(folder / "imagehub.toml")
    settings.compute = ComputeSettings(driver="qemu", accel=accel, memory_mb=1024)  # type: ignore[arg-type]
    catalog, _ = initialise(settings)
    admin = admin_of(catalog)
    started = time.perf_counter()
    vm = vms.create_vm(catalog, admin, image_id, "bench", PASSWORD)
    try:
        return to_login(catalog.store.vms_dir / vm["id"] / "console.sock", started)
    finally:
        vms.delete_vm(catalog, admin, vm["id"])
        catalog.dispose()


def plain_boot(folder: Path, accel: str, base: Path) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(dir=folder, prefix="plain-"))
    disk, seed, sock = work / "disk.qcow2", work / "seed.iso", work / "console.sock"
    qemu.create(disk, "qcow2", 20 << 30, extra=["-b", str(base), "-F", "raw"])
    write_seed_iso(seed, seed_data(f"i-{work.name}", "bench", PASSWORD, "Linux"))
    command = [
        "qemu-system-x86_64", "-nodefaults", "-accel", accel, "-machine", "q35", "-m", "1024", "-smp", "1",
        "-drive", f"file={disk},format=qcow2,if=virtio", "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-nic", "user,model=virtio-net-pci", "-display", "none",
        "-chardev", f"socket,id=serial0,path={sock},server=on,wait=off", "-serial", "chardev:serial0",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return to_login(sock, started)
    finally:
        process.kill()
        process.wait()


def best(run: Callable[[], tuple[float, float]], repeat: int) -> tuple[float, float]:
    times = [run() for _ in range(repeat)]
    return min(t[0] for t in times), min(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", help="tcg or kvm")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`/kill: the VMs are still stopped
    guest = build_guest()
    accels = ["tcg"] + (["kvm"] if kvm_usable() else [])
    if options.only:
        accels = [a for a in accels if a == options.only]
    with tempfile.TemporaryDirectory(prefix="imagehub-guestbench-") as name:
        folder = Path(name)
        (folder / "os_matrix.toml").write_text(OS_MATRIX)
        (folder / "imagehub.toml").write_text(
            f'[storage]\ndata_dir = "var"\n[images]\nos_matrix = "{folder / "os_matrix.toml"}"\n'
            f'[import]\nlocal_roots = ["{guest.parent}"]\n'
        )
        catalog, _ = initialise(load_settings(folder / "imagehub.toml"))
        admin = admin_of(catalog)
        create_tenant(catalog, admin, "bench")
        image = submit_import(
            catalog, admin, name="debian", file=str(guest), os_type="Linux", platform="Debian", os_version="12",
            arch="x86_64", size_gb=20, tenant="bench",
        )  # fmt: skip
        Worker(catalog, poll_seconds=0.1).run_until(image["job_id"], timeout=600)
        base = catalog.store.image_path(image["id"], "raw")
        catalog.dispose()
        print(f"guest: {guest} ({os.path.getsize(guest) >> 20} MiB), imported as {image['id']}")
        print(f"{'case':24}{'to login: (s)':>15}{'to shell (s)':>14}{'ratio':>8}{'target':>8}")
        for accel in accels:
            try:
                ours = best(functools.partial(imagehub_boot, folder, accel, image["id"]), options.repeat)
                plain = best(functools.partial(plain_boot, folder, accel, base), options.repeat)
            except ConsoleTimeout as exc:  # e.g. a nested KVM that stops the guest with an emulation failure
                print(f"{accel}: the guest never reached its login prompt: {str(exc).splitlines()[0]}")
                continue
            for label, (prompt, shell) in ((f"imagehub, {accel}", ours), (f"plain qemu, {accel}", plain)):
                print(f"{label:24}{prompt:15.1f}{shell:14.1f}")
            ratio = ours[1] / plain[1]
            verdict = "ok" if ratio <= TARGET else "MISSED"
            print(f"{'  ratio (to shell)':24}{'':29}{ratio:8.2f}{TARGET:8.1f}  {verdict}")


if __name__ == "__main__":
    main()
