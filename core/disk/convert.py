"""The one `qemu-img convert` runner, for import, export and capture.

The source format is always given (`-f`, never probed) and so is the output's (`-O`). qemu-img runs
in a process group of its own under a memory (address space) limit, a CPU-time limit and a wall-clock
deadline; its progress (`-p`) is parsed here once and reported through `on_progress`. When the
caller's `on_progress` or `heartbeat` raises (the job's lease was lost, it was cancelled), when the
deadline passes or qemu-img fails, the whole group is killed and the partial output removed; the
reason raised names files, never the server's folders. A finished output is fsynced before
`convert` returns.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from core.catalog.errors import Failed
from core.catalog.settings import ImportSettings
from core.disk.qemu import QEMU_IMG

MIB = 1 << 20
STDERR_KEPT = 64 * 1024  # the tail of stderr kept for the reason (qemu-img prints its error last)
# "    (12.34/100%)": what `qemu-img convert -p` writes to stdout, carriage-return separated.
PROGRESS = re.compile(rb"\((\d{1,3}(?:\.\d+)?)/100%\)")
# What qemu-img (or the loader, or glib) prints when its address space limit is too small.
OUT_OF_MEMORY = re.compile(
    r"Cannot allocate memory|failed to map segment|failed to allocate|out of memory|qemu_thread_create",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Limits:
    """What one conversion may use: `memory_mb` of address space, and `base_seconds` plus the time
    the source's allocated data takes at `min_mib_per_second` (wall clock, and as much CPU time)."""

    memory_mb: int = 4096
    base_seconds: float = 600.0
    min_mib_per_second: float = 10.0

    @classmethod
    def of(cls, settings: ImportSettings) -> Limits:
        """The limits configured as import.convert_* (they apply to exports and captures too)."""
        return cls(settings.convert_memory_mb, settings.convert_timeout_seconds, settings.convert_min_mib_per_second)

    def seconds_for(self, data_bytes: int) -> float:
        return self.base_seconds + data_bytes / (self.min_mib_per_second * MIB)

    def seconds_for_files(self, *files: Path) -> float:
        """The time allowed for converting `files` (a source and its backing files): their allocated data."""
        return self.seconds_for(sum(path.stat().st_blocks * 512 for path in files if path.exists()))


def percentages(text: bytes) -> list[float]:
    """Every progress percentage in a piece of `qemu-img convert -p` output, in order."""
    return [float(found) for found in PROGRESS.findall(text)]


def scrub(text: str, paths: Sequence[Path]) -> str:
    """`text` with each of `paths` (files or folders) cut down to what lies below the folder, or its name."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        if path in ("", "/", "."):
            continue
        text = text.replace(path + "/", "").replace(path, Path(path).name)
    return text


def convert(
    src: Path,
    src_format: str,
    dst: Path,
    dst_format: str,
    *,
    options: Sequence[str] = (),
    limits: Limits = Limits(),
    timeout: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_seconds: float = 5.0,
    scrub_paths: Sequence[Path] = (),
) -> None:
    """Convert `src` (in `src_format`) into `dst` (in `dst_format`), extra qemu-img `options` before the files.

    `on_progress(fraction)` is called, in this thread, each time qemu-img reports more (never less)
    and with 1.0 at the end; `heartbeat()` whenever `heartbeat_seconds` pass without progress. If
    either raises, qemu-img is killed and the exception propagates. `timeout` (default: what
    `limits` allows for the source's allocated data) bounds the run. Failed's reason names `src`,
    `dst` and anything below their folders or `scrub_paths` without the folders."""
    seconds = limits.seconds_for_files(src) if timeout is None else timeout
    hidden = [src, dst, src.parent, dst.parent, *scrub_paths]
    argv = [QEMU_IMG, "convert", "-p", "-f", src_format, "-O", dst_format, *options, str(src), str(dst)]
    dst.unlink(missing_ok=True)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed as a whole
            preexec_fn=_limits(math.ceil(seconds), limits.memory_mb * MIB),
        )
    except FileNotFoundError as exc:
        raise Failed("qemu-img is not installed (Debian package qemu-utils)") from exc
    run = _Run(proc)
    try:
        outcome = run.follow(time.monotonic() + seconds, on_progress, heartbeat, heartbeat_seconds)
        if outcome == "timed out" or proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise Failed("conversion took too long; stopped")
        if proc.returncode != 0:
            errors = scrub(run.errors(), hidden)
            if OUT_OF_MEMORY.search(errors):
                raise Failed("qemu-img convert ran out of memory (limit {limit} MiB)", limit=limits.memory_mb)
            raise Failed("qemu-img convert failed: {reason}", reason=_last_line(errors, proc.returncode))
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if on_progress is not None:
            on_progress(1.0)
    except BaseException:
        run.kill()
        dst.unlink(missing_ok=True)
        raise
    finally:
        run.close()


class _Run:
    """One running qemu-img: its output read by two threads, its progress and stderr's tail kept."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.fraction = 0.0
        self.changed = threading.Event()  # progress advanced, or stdout ended
        self.ended = False
        self.tail = bytearray()
        self.readers = [
            threading.Thread(target=self._read_progress, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_progress(self) -> None:
        stream = cast(io.BufferedReader, self.proc.stdout)  # Popen(stdout=PIPE), unbuffered text off
        recent = b""
        while chunk := stream.read1(4096):
            recent = (recent + chunk)[-64:]  # a percentage split across two reads is still seen
            found = percentages(recent)
            if found and found[-1] / 100 > self.fraction:
                self.fraction = min(found[-1] / 100, 1.0)
                self.changed.set()
        self.ended = True
        self.changed.set()

    def _read_errors(self) -> None:
        stream = cast(io.BufferedReader, self.proc.stderr)
        while chunk := stream.read1(65536):
            self.tail.extend(chunk)
            del self.tail[:-STDERR_KEPT]

    def follow(
        self,
        deadline: float,
        on_progress: Callable[[float], None] | None,
        heartbeat: Callable[[], None] | None,
        heartbeat_seconds: float,
    ) -> str:
        """Report progress until qemu-img ends ("ended") or `deadline` passes ("timed out")."""
        reported = 0.0
        next_beat = time.monotonic() + heartbeat_seconds
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timed out"
            self.changed.wait(min(deadline, next_beat) - now)
            self.changed.clear()
            if self.ended:
                break
            now = time.monotonic()
            if self.fraction > reported:
                reported = self.fraction
                next_beat = now + heartbeat_seconds
                if on_progress is not None:
                    on_progress(reported)
            elif now >= next_beat:
                next_beat = now + heartbeat_seconds
                if heartbeat is not None:
                    heartbeat()
        try:
            self.proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            return "timed out"
        return "ended"

    def errors(self) -> str:
        self.readers[1].join(5)
        return bytes(self.tail).decode("utf-8", "replace")

    def kill(self) -> None:
        """Kill qemu-img's process group (while it runs) and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        for reader in self.readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _limits(cpu_seconds: int, address_space: int) -> Callable[[], None]:
    def apply() -> None:
        # SIGXCPU at the soft limit (a clean "took too long"), SIGKILL a second later if ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


def _last_line(errors: str, returncode: int) -> str:
    lines = [line.strip().removeprefix("qemu-img: ") for line in errors.splitlines() if line.strip()]
    if lines:
        return lines[-1]
    if returncode < 0:
        return f"stopped by signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
