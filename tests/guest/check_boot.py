"""Boot the test guest once under TCG and check what the end-to-end tests rely on (a script, not a test).

    .venv/bin/python tests/guest/check_boot.py [--cache DIR] [--accel tcg|kvm]

Builds (or reuses) the guest, boots an overlay of it with a NoCloud seed from `core.compute.seed`
(host name `guest-check`, a new root password), then checks on the serial console: `login:` comes,
the image's old password is refused, the seed's new one logs in, `hostname` says `guest-check`;
then presses the ACPI power button (QMP `system_powerdown`, as `vm stop` does) and waits for qemu
to exit. Prints the time to `login:`, to the first shell and to power-off; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.compute.seed import seed_data, write_seed_iso
from tests.guest.build import OLD_PASSWORD, build_guest
from tests.guest.console import LOGIN, SerialConsole

__test__ = False

HOSTNAME = "guest-check"
NEW_PASSWORD = "New-Passw0rd#2"
BOOT_TIMEOUT = 180.0
POWEROFF_TIMEOUT = 90.0


def qemu_argv(disk: Path, seed: Path, serial: Path, serial_log: Path, qmp: Path, accel: str) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-m", "1024", "-nodefaults", "-display", "none",
        "-drive", f"file={disk},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-nic", "user,model=virtio-net-pci",
        "-chardev", f"socket,id=serial0,path={serial},server=on,wait=off,logfile={serial_log}",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]  # fmt: skip


def qmp_command(path: Path, command: str) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        reader = sock.makefile("rb")
        json.loads(reader.readline())  # the greeting
        for execute in ("qmp_capabilities", command):
            sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
            while True:
                reply: dict[str, object] = json.loads(reader.readline())
                if "return" in reply or "error" in reply:
                    break
        return reply


def check(cache: Path | None, accel: str) -> None:
    image = build_guest(cache)
    with tempfile.TemporaryDirectory(prefix="guest-check-") as tmp:
        folder = Path(tmp)
        disk = folder / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(disk)],
                       check=True)  # fmt: skip
        seed = folder / "seed.iso"
        write_seed_iso(seed, seed_data("i-guest-check", HOSTNAME, NEW_PASSWORD, "Linux"))
        serial, serial_log, qmp = folder / "serial.sock", folder / "serial.log", folder / "qmp.sock"
        started = time.monotonic()
        qemu = subprocess.Popen(qemu_argv(disk, seed, serial, serial_log, qmp, accel))
        try:
            with SerialConsole(serial) as console:
                try:
                    _drive(console, qemu, qmp, started)
                except Exception:
                    print(f"--- console ends:\n{console.tail(4000)}", file=sys.stderr)
                    raise
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()


def _drive(console: SerialConsole, qemu: subprocess.Popen[bytes], qmp: Path, started: float) -> None:
    console.expect(LOGIN, BOOT_TIMEOUT, consume=False)
    print(f"login: after {time.monotonic() - started:.1f}s", flush=True)
    if console.login("root", OLD_PASSWORD, timeout=60):
        raise AssertionError("the image's old password still logs in: the seed's chpasswd did not apply")
    print(f"old password refused after {time.monotonic() - started:.1f}s", flush=True)
    if not console.login("root", NEW_PASSWORD, timeout=60):
        raise AssertionError("the seed's new password was refused")
    print(f"logged in with the new password after {time.monotonic() - started:.1f}s", flush=True)
    hostname = console.run("hostname", timeout=30).strip()
    if hostname != HOSTNAME:
        raise AssertionError(f"hostname is {hostname!r}, not {HOSTNAME!r}")
    print(f"hostname: {hostname}", flush=True)
    pressed = time.monotonic()
    reply = qmp_command(qmp, "system_powerdown")
    if "error" in reply:
        raise AssertionError(f"system_powerdown: {reply}")
    try:
        code = qemu.wait(timeout=POWEROFF_TIMEOUT)
    except subprocess.TimeoutExpired:
        message = f"the guest did not power off within {POWEROFF_TIMEOUT:.0f}s of the power button"
        raise AssertionError(message) from None
    print(f"powered off (ACPI) {time.monotonic() - pressed:.1f}s after the button; qemu exited {code}", flush=True)
    print(f"total {time.monotonic() - started:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    args = parser.parse_args()
    check(args.cache, args.accel)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
