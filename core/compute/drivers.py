"""Compute drivers: what runs a VM. `none` only records VMs; `qemu` runs them with qemu-system.

A driver works on a `MachineSpec` (the VM's folder, disk, seed and architecture) and answers
`start`, `stop` and `status` ("running", "paused" or "stopped"; a `none` VM is "defined": nothing
runs it). The driver of each VM is chosen when it is made (config `compute.driver`; `auto`: qemu
when qemu-system for the image's architecture is installed, else none, `driver_for`) and recorded
on the VM, so changing the config later does not orphan it.

The `qemu` driver runs `qemu-system-x86_64` or `qemu-system-aarch64` by the image's architecture,
with KVM when `/dev/kvm` is usable and the host has the same architecture (falling back to TCG if
KVM fails to start), else TCG; config `compute.accel` may force one. qemu daemonizes, so the VM
outlives the command that started it; its PID file, QMP socket and console log live in the VM's
folder, and start/stop/status go through QMP (JSON over the unix socket).

The driver manages the VMs of the host it runs on: with a catalog shared by several machines, run
`vm start/stop/delete` for a qemu VM on the machine that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.catalog.errors import Failed, Invalid
from core.catalog.settings import ComputeSettings

RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"
DEFINED = "defined"  # a VM of the `none` driver: recorded, its disk and seed made, never run
QMP_SOCKET = "qmp.sock"
PID_FILE = "qemu.pid"
CONSOLE_LOG = "console.log"
CONSOLE_SOCKET = "console.sock"  # the serial console, for a person or a test to type into
DISK_FILE = "disk.qcow2"
SEED_FILE = "seed.iso"
QEMU_BINARY = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
AARCH64_FIRMWARE = (
    "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/usr/share/edk2/aarch64/QEMU_EFI.fd",
)
_UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class MachineSpec:
    """What a driver needs to know about one VM."""

    vm_id: str
    arch: str
    folder: Path
    recorded_status: str = STOPPED

    @property
    def disk(self) -> Path:
        return self.folder / DISK_FILE

    @property
    def seed(self) -> Path:
        return self.folder / SEED_FILE

    @property
    def qmp_socket(self) -> Path:
        return self.folder / QMP_SOCKET

    @property
    def pid_file(self) -> Path:
        return self.folder / PID_FILE


class Driver(Protocol):
    name: str

    def start(self, spec: MachineSpec) -> int | None:
        """Start the VM; return its process ID when there is one. Raise Failed with the reason."""

    def stop(self, spec: MachineSpec, *, force: bool = False, timeout: float | None = None) -> None:
        """Stop the VM: ACPI power-down, then after `timeout` a hard stop (`force`: hard stop at once)."""

    def status(self, spec: MachineSpec) -> str:
        """running, paused or stopped."""


class NoneDriver:
    """Records VMs without running them (hosts without qemu-system): they are `defined`; starting
    one is refused by core.compute.vms, and stopping or deleting one has nothing to stop."""

    name = "none"

    def start(self, spec: MachineSpec) -> int | None:
        return None

    def stop(self, spec: MachineSpec, *, force: bool = False, timeout: float | None = None) -> None:
        return None

    def status(self, spec: MachineSpec) -> str:
        return DEFINED


def describe_driver(settings: ComputeSettings, arch: str | None = None) -> str:
    """One line for people: what runs new VMs of `arch` (this host's by default) here, and how."""
    arch = arch or host_arch()
    name = driver_for(settings, arch)
    if name == "none":
        why = "compute.driver is none" if settings.driver == "none" else f"no {QEMU_BINARY.get(arch, 'qemu')} here"
        return f"VMs ({arch}) are only recorded, not run: {why}"
    try:
        accel = QemuDriver(settings).accelerators(arch)[0]
    except Failed as exc:
        return f"VMs ({arch}) cannot run: {exc}"
    return f"VMs ({arch}) run with qemu ({'KVM' if accel == 'kvm' else 'TCG, no KVM'})"


def driver_for(settings: ComputeSettings, arch: str) -> str:
    """The driver a new VM of `arch` gets: the configured one, or for `auto` qemu when its
    qemu-system is installed, else none."""
    if settings.driver != "auto":
        return settings.driver
    binary = QEMU_BINARY.get(arch)
    return "qemu" if binary is not None and shutil.which(binary) else "none"


# ---- QMP ------------------------------------------------------------------------------------


class QmpError(Failed):
    """QMP could not be reached or answered with an error."""


class QmpClient:
    """A small synchronous QMP client: greeting, `qmp_capabilities`, then one command at a time."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._dir_fd: int | None = None

    def __enter__(self) -> QmpClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _address(self) -> str:
        address = str(self.path)
        if len(address.encode()) <= _UNIX_PATH_MAX:
            return address
        # Too long for sockaddr_un: reach the folder through a descriptor (Linux /proc magic link).
        self._dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{self.path.name}"

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._address())
        except OSError as exc:
            sock.close()
            self.close()
            raise QmpError("cannot reach QMP at {path}: {reason}", path=self.path, reason=exc.strerror or exc) from exc
        self._sock = sock
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError("unexpected QMP greeting from {path}", path=self.path)
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise QmpError("QMP at {path}: {exc}", path=self.path, exc=exc) from exc
            if not chunk:
                raise QmpError("QMP at {path} closed the connection", path=self.path)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; events that arrive before the answer are skipped."""
        assert self._sock is not None
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\r\n")
        except OSError as exc:
            raise QmpError("QMP at {path}: {exc}", path=self.path, exc=exc) from exc
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise QmpError(
                    "QMP {command}: {reason}", command=command, reason=reply["error"].get("desc", reply["error"])
                )
            return reply.get("return")


# ---- qemu -----------------------------------------------------------------------------------


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _pid_alive(pid: int, vm_id: str) -> bool:
    """The process exists, is not a zombie, and is the qemu of this VM (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return f"process=imagehub-{vm_id}\0".encode() in cmdline


class QemuDriver:
    """Runs VMs with qemu-system (see the module docstring)."""

    name = "qemu"

    def __init__(self, settings: ComputeSettings) -> None:
        self.settings = settings

    def accelerators(self, arch: str) -> list[str]:
        """qemu's accelerators in the order to try: KVM (falling back to TCG if it fails) or TCG alone."""
        wanted = self.settings.accel
        if wanted == "tcg":
            return ["tcg"]
        native = arch == host_arch() and kvm_usable()
        if wanted == "kvm":
            if not native:
                raise Failed("KVM is not usable for {arch} on this host (compute.accel = kvm)", arch=arch)
            return ["kvm"]
        if not native:
            return ["tcg"]
        return ["kvm"] if arch == "aarch64" else ["kvm", "tcg"]

    def command(self, spec: MachineSpec) -> list[str]:
        binary = QEMU_BINARY.get(spec.arch)
        if binary is None:
            raise Invalid(
                "architecture {spec_arch} cannot be run; choose one of {choices}",
                spec_arch=spec.arch,
                choices=", ".join(QEMU_BINARY),
            )
        args = [binary, "-name", f"{spec.vm_id},process=imagehub-{spec.vm_id}", "-nodefaults", "-no-user-config"]
        accels = self.accelerators(spec.arch)
        for accel in accels:
            args += ["-accel", accel]
        if spec.arch == "aarch64":
            # `virt` defaults to a 32-bit CPU; `host` exists only under KVM (so no TCG fallback there).
            args += ["-machine", "virt", "-cpu", "host" if accels == ["kvm"] else "max"]
            firmware = next((f for f in AARCH64_FIRMWARE if Path(f).is_file()), None)
            if firmware:
                args += ["-bios", firmware]
        else:
            # qemu's default CPU model runs under KVM and TCG alike (`host`/`max` trip some nested KVMs).
            args += ["-machine", "q35"]
        args += [
            "-m",
            str(self.settings.memory_mb),
            "-smp",
            str(self.settings.cpus),
            "-drive",
            f"file={spec.disk},format=qcow2,if=virtio,cache=writeback,discard=unmap",
            "-drive",
            f"file={spec.seed},format=raw,if=virtio,readonly=on",
            "-nic",
            "user,model=virtio-net-pci",
            "-display",
            "none",
            # The serial console: logged to console.log (`vm console`), and a socket to type into.
            "-chardev",
            f"socket,id=serial0,path={CONSOLE_SOCKET},server=on,wait=off,logfile={CONSOLE_LOG},logappend=on",
            "-serial",
            "chardev:serial0",
            # Relative to the folder (qemu's working directory): sockaddr_un paths are short.
            "-qmp",
            f"unix:{QMP_SOCKET},server=on,wait=off",
            "-pidfile",
            str(spec.pid_file),
            "-daemonize",
        ]
        return args

    def pid(self, spec: MachineSpec) -> int | None:
        try:
            pid = int(spec.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, spec.vm_id) else None

    def start(self, spec: MachineSpec) -> int | None:
        if self.pid(spec) is not None:
            raise Failed("vm {spec_vm_id} is already running", spec_vm_id=spec.vm_id)
        command = self.command(spec)
        spec.qmp_socket.unlink(missing_ok=True)
        spec.pid_file.unlink(missing_ok=True)
        (spec.folder / CONSOLE_SOCKET).unlink(missing_ok=True)
        try:
            done = subprocess.run(
                command,
                cwd=spec.folder,
                capture_output=True,
                text=True,
                timeout=self.settings.start_timeout_seconds,
                check=False,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise Failed(
                "{program} is not installed (Debian package qemu-system-x86 or qemu-system-arm)", program=command[0]
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise Failed(
                "{program} did not start within {start_timeout_seconds} s",
                program=command[0],
                start_timeout_seconds=self.settings.start_timeout_seconds,
            ) from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise Failed(
                "{program} failed: {reason}",
                program=command[0],
                reason=lines[-1] if lines else f"exit status {done.returncode}",
            )
        pid = self.pid(spec)
        if pid is None:
            raise Failed(
                "{program} exited right after starting vm {spec_vm_id}", program=command[0], spec_vm_id=spec.vm_id
            )
        return pid

    def status(self, spec: MachineSpec) -> str:
        if self.pid(spec) is None:
            return STOPPED
        try:
            with QmpClient(spec.qmp_socket, timeout=5.0) as qmp:
                state = qmp.execute("query-status")
        except QmpError:
            return STOPPED if self.pid(spec) is None else RUNNING
        return RUNNING if state.get("running") else PAUSED if state.get("status") != "shutdown" else STOPPED

    def query(self, spec: MachineSpec, command: str) -> Any:
        """Run one QMP command on a running VM (e.g. `query-kvm`)."""
        with QmpClient(spec.qmp_socket) as qmp:
            return qmp.execute(command)

    def _wait_gone(self, spec: MachineSpec, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid, spec.vm_id):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid, spec.vm_id)

    def stop(self, spec: MachineSpec, *, force: bool = False, timeout: float | None = None) -> None:
        pid = self.pid(spec)
        if pid is None:
            return
        timeout = self.settings.stop_timeout_seconds if timeout is None else timeout
        if not force:
            try:
                with QmpClient(spec.qmp_socket) as qmp:
                    qmp.execute("system_powerdown")
            except QmpError:
                pass
            if self._wait_gone(spec, pid, timeout):
                self._cleanup(spec)
                return
        try:
            with QmpClient(spec.qmp_socket) as qmp:
                qmp.execute("quit")
        except QmpError:
            pass
        if not self._wait_gone(spec, pid, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(spec, pid, 5):
                raise Failed("vm {spec_vm_id} (pid {pid}) does not stop", spec_vm_id=spec.vm_id, pid=pid)
        self._cleanup(spec)

    @staticmethod
    def _cleanup(spec: MachineSpec) -> None:
        spec.qmp_socket.unlink(missing_ok=True)
        spec.pid_file.unlink(missing_ok=True)
        (spec.folder / CONSOLE_SOCKET).unlink(missing_ok=True)


def get_driver(name: str, settings: ComputeSettings) -> Driver:
    if name == "none":
        return NoneDriver()
    if name == "qemu":
        return QemuDriver(settings)
    raise Invalid("compute driver {name} is unknown; choose auto, none or qemu", name=name)
