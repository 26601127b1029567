"""Conversion with qemu-img: the detected format given explicitly, the store format out, then resize.

`qemu-img convert` reads only the allocated parts of a sparse source (block status, SEEK_DATA for
raw) and writes zeros as holes (`-S`), so a 500 GB target holding 2 GB of data costs about what 2 GB
costs. A raw source is already staged sparse, so raw -> raw is a rename, not a copy. Resizing a raw
file is a truncate (a hole); a qcow2 only grows its header. qemu-img runs through core.disk.convert
(memory, CPU and time limits, import.convert_*): its progress (`-p`) is reported, the job's lease is
renewed while it works, and it is stopped once it has run too long or the job is lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from core.catalog.errors import Failed
from core.disk import convert as runner
from core.disk import qemu
from core.importer.inspect import QEMU_NAME


def convert(
    source: Path,
    source_format: str,
    output: Path,
    store_format: str,
    progress: Callable[[float], None],
    heartbeat_seconds: float = 5.0,
    limits: runner.Limits = runner.Limits(),
) -> None:
    """Convert `source` (of the detected format) into `output` in the store format.

    `progress(fraction)` is called at least every `heartbeat_seconds` while qemu-img runs; if it
    raises (the job's lease was lost), qemu-img is killed and the exception propagates.
    """
    output.unlink(missing_ok=True)
    if source_format == "raw" and store_format == "raw":
        os.replace(source, output)
        progress(1.0)
        return
    options = ["-o", "cluster_size=65536"] if store_format == "qcow2" else []
    if direct_io_supported(output.parent):
        options += ["-t", "none"]  # O_DIRECT: no pile of dirty pages, the data is on disk when it ends
    latest = [0.0]

    def advanced(fraction: float) -> None:
        latest[0] = fraction
        progress(fraction)

    runner.convert(
        source,
        QEMU_NAME[source_format],
        output,
        store_format,
        options=[*options, "-S", "4k"],
        limits=limits,
        on_progress=advanced,
        heartbeat=lambda: progress(latest[0]),
        heartbeat_seconds=heartbeat_seconds,
    )


def direct_io_supported(folder: Path) -> bool:
    """Whether files in `folder` can be opened with O_DIRECT (not on tmpfs, for one)."""
    probe = folder / f".direct-io-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError:
        return False
    else:
        os.close(fd)
        return hasattr(os, "O_DIRECT")
    finally:
        probe.unlink(missing_ok=True)


def resize(path: Path, store_format: str, size_bytes: int) -> None:
    """Grow the converted image to the target size (never shrinks: inspection checked that)."""
    if store_format == "raw":
        current = path.stat().st_size
        if current > size_bytes:
            raise Failed("conversion produced an image larger than the target size")
        os.truncate(path, size_bytes)
        return
    qemu.run_qemu_img(["resize", "-q", "-f", store_format, str(path), str(size_bytes)], timeout=120)


def copy_member(source: Path, offset: int, size: int, output: Path, progress: Callable[[int], None]) -> None:
    """Copy one OVA member out of the archive, keeping runs of zeros as holes."""
    chunk = 1 << 20
    zeros = bytes(chunk)
    with open(source, "rb", buffering=0) as src, open(output, "wb", buffering=0) as dst:
        done = 0
        buf = bytearray(chunk)
        view = memoryview(buf)
        while done < size:
            want = min(chunk, size - done)
            n = os.preadv(src.fileno(), [view[:want]], offset + done)
            if n <= 0:
                raise Failed("file is shorter than its header claims (truncated?)")
            if n == chunk and view[:n] == zeros:
                dst.seek(n, os.SEEK_CUR)
            else:
                dst.write(view[:n])
            done += n
            progress(done)
        dst.truncate(size)
