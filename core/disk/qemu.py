"""Running qemu-img safely: the format always given, never probed; CPU and memory limited.

`run_limited` is the one runner for the tools that read an untrusted image (qemu-img check and
map, blkid): resource limits, a timeout, bounded output (qemu-img check prints a line per bad
cluster), and no server path in what it reports.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.catalog.errors import Failed

QEMU_IMG = "qemu-img"
INFO_CPU_SECONDS = 2
INFO_ADDRESS_SPACE = 1 << 30
# qemu-img check: info's limits, the CPU time growing with the image (measured here: 0.4 s for a
# million clusters; a 500 GB qcow2 of 64 KiB clusters has eight million).
CHECK_FORMATS = ("qcow2", "vmdk", "vhdx", "vdi")  # what qemu-img check supports (its exit 63: not)
MAX_OUTPUT = 1 << 20
MAX_LINE = 4096


def _limits(cpu_seconds: int | None, address_space: int | None) -> Any:
    def apply() -> None:
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


def run_qemu_img(
    args: Sequence[str],
    *,
    cpu_seconds: int | None = None,
    address_space: int | None = None,
    timeout: float | None = None,
) -> str:
    """Run qemu-img with `args`; return stdout, or raise Failed with its first error line."""
    try:
        completed = subprocess.run(
            [QEMU_IMG, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limits(cpu_seconds, address_space),
            check=False,
        )
    except FileNotFoundError as exc:
        raise Failed("qemu-img is not installed (Debian package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise Failed("qemu-img {command} timed out", command=args[0]) from exc
    if completed.returncode != 0:
        message = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        raise Failed("qemu-img {command} failed: {message}", command=args[0], message=message)
    return completed.stdout


@dataclass
class Completed:
    """A limited run: its exit status, its output (at most `MAX_OUTPUT` of each) and whether it was cut."""

    returncode: int
    stdout: str
    stderr: str
    truncated: bool = False

    def first_line(self, marker: str = "") -> str:
        """The first stderr line holding `marker` (else the first line), for a one-line reason."""
        lines = [line.strip().removeprefix("qemu-img: ") for line in self.stderr.splitlines() if line.strip()]
        marked = [line for line in lines if marker and marker in line]
        return (marked or lines or [f"exit status {self.returncode}"])[0]


def run_limited(
    argv: Sequence[str],
    *,
    cpu_seconds: int,
    address_space: int,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    scrub: Sequence[Path] = (),
) -> Completed:
    """Run `argv` under CPU, memory and time limits; stdout lines go to `on_line` if given.

    At most `MAX_OUTPUT` bytes of stdout (when collected) and of stderr are kept, the rest is read
    and dropped, so a tool that prints a line per cluster cannot grow this process. If `on_line`
    raises, the tool is stopped and the exception propagates. Each path in `scrub` is replaced by
    its name in what is returned (no server paths in a user's reason)."""
    program = Path(argv[0]).name
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(cpu_seconds, address_space),
        )
    except FileNotFoundError as exc:
        raise Failed("{program} is not installed", program=program) from exc
    errors = bytearray()
    state = {"cut": False, "timed_out": False}

    def drain_errors() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(65536):
            if len(errors) < MAX_OUTPUT:
                errors.extend(chunk[: MAX_OUTPUT - len(errors)])
            else:
                state["cut"] = True

    def stop() -> None:
        state["timed_out"] = True
        proc.kill()

    reader = threading.Thread(target=drain_errors, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, stop)
    timer.start()
    output = bytearray()
    try:
        assert proc.stdout is not None
        while line := proc.stdout.readline(MAX_LINE):
            if on_line is not None:
                on_line(line.decode("utf-8", "replace"))
            elif len(output) < MAX_OUTPUT:
                output.extend(line[: MAX_OUTPUT - len(output)])
            else:
                state["cut"] = True
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if state["timed_out"]:
        raise Failed("{program} timed out", program=program)

    def clean(data: bytearray) -> str:
        text = data.decode("utf-8", "replace")
        for path in scrub:
            text = text.replace(str(path), path.name)
        return text

    return Completed(proc.returncode, clean(output), clean(errors), state["cut"])


def check(path: Path, fmt: str) -> Completed:
    """`qemu-img check` (read only, JSON report) under info's limits; the exit status is the caller's:
    0 clean, 2 corruptions, 3 leaked clusters only, 1 the check could not finish, 63 not supported."""
    size = path.stat().st_size
    return run_limited(
        [QEMU_IMG, "check", "--output=json", "-f", fmt, str(path)],
        cpu_seconds=INFO_CPU_SECONDS + size // (64 << 30),
        address_space=INFO_ADDRESS_SPACE,
        timeout=60 + size / (1 << 30),
        scrub=[path],
    )


def map_extents(path: Path, fmt: str, on_extent: Callable[[int, int | None], None]) -> None:
    """`qemu-img map` streamed: `on_extent(length, offset in the file or None)` for every extent.

    Read a line at a time (the map of a fragmented disk is long); limited like `check`."""
    size = path.stat().st_size

    def line(text: str) -> None:
        length = _LENGTH.search(text)
        if length is not None:
            offset = _OFFSET.search(text)
            on_extent(int(length.group(1)), int(offset.group(1)) if offset else None)

    done = run_limited(
        [QEMU_IMG, "map", "--output=json", "-f", fmt, str(path)],
        cpu_seconds=INFO_CPU_SECONDS * 5 + size // (16 << 30),
        address_space=INFO_ADDRESS_SPACE,
        timeout=120 + size / (1 << 30),
        on_line=line,
        scrub=[path],
    )
    if done.returncode != 0:
        raise Failed("qemu-img map failed: {message}", message=done.first_line())


_LENGTH = re.compile(r'"length":\s*(\d+)')
_OFFSET = re.compile(r'"offset":\s*(\d+)')


def info(path: Path, fmt: str) -> dict[str, Any]:
    """`qemu-img info` with the format given explicitly, under Glance's limits (2 s CPU, 1 GiB)."""
    out = run_qemu_img(
        ["info", "--output=json", "-f", fmt, str(path)],
        cpu_seconds=INFO_CPU_SECONDS,
        address_space=INFO_ADDRESS_SPACE,
        timeout=30,
    )
    info: dict[str, Any] = json.loads(out)
    return info


def measure(path: Path, fmt: str, target: str) -> int:
    """The bytes `qemu-img convert -O target` would write for `path` (`qemu-img measure`'s required
    size: the data plus the target format's own tables), under info's limits."""
    out = run_qemu_img(
        ["measure", "--output=json", "-f", fmt, "-O", target, str(path)],
        cpu_seconds=INFO_CPU_SECONDS * 5,
        address_space=INFO_ADDRESS_SPACE,
        timeout=60,
    )
    return int(json.loads(out)["required"])


def create(path: Path, fmt: str, size_bytes: int, extra: Sequence[str] = ()) -> None:
    run_qemu_img(["create", "-q", "-f", fmt, *extra, str(path), str(size_bytes)], timeout=60)
