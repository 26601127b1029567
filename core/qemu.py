"""Running qemu-img safely: the format always given, never probed; CPU and memory limited."""

from __future__ import annotations

import json
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import Failed

QEMU_IMG = "qemu-img"
INFO_CPU_SECONDS = 2
INFO_ADDRESS_SPACE = 1 << 30


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


def info(path: Path, fmt: str) -> dict[str, Any]:
    """`qemu-img info` with the format given explicitly, under Glance's limits (2 s CPU, 1 GiB)."""
    out = run_qemu_img(
        ["info", "--output=json", "-f", fmt, str(path)],
        cpu_seconds=INFO_CPU_SECONDS,
        address_space=INFO_ADDRESS_SPACE,
        timeout=30,
    )
    return json.loads(out)


def create(path: Path, fmt: str, size_bytes: int, extra: Sequence[str] = ()) -> None:
    run_qemu_img(["create", "-q", "-f", fmt, *extra, str(path), str(size_bytes)], timeout=60)
