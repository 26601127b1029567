"""Start-up of the command line: wall time of `imagehub --help`, `imagehub image list` and
`imagehub image list --json` on a small catalog (20 images, made in a temporary folder), beside
`python -c pass`. Each figure is the median of R runs of a fresh process (warm file cache); the
target is 300 ms of wall time for each command. CPU (user + system time of the process) is shown
beside it: on a shared machine it tells start-up work from waiting for a core.

Run: .venv/bin/python bench/cli.py [--repeat R] [--images N].
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 0.300


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(command: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """The median wall and CPU time of `repeat` runs of `command` (after one unmeasured run that warms
    the caches)."""
    walls, cpus = [], []
    for run in range(repeat + 1):
        cpu, started = _children_cpu(), time.perf_counter()
        subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
        if run:
            walls.append(time.perf_counter() - started)
            cpus.append(_children_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    from bench.catalog import build

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--images", type=int, default=20)
    options = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="imagehub-bench-") as folder:
        config = Path(folder) / "imagehub.toml"
        config.write_text('[storage]\ndata_dir = "var"\n')
        build(config, options.images)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")} | {"IMAGEHUB_CONFIG": str(config)}
        imagehub = [sys.executable, "-m", "cli.main"]
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("imagehub --help", [*imagehub, "--help"]),
            (f"imagehub image list ({options.images} images)", [*imagehub, "image", "list"]),
            (f"imagehub image list --json ({options.images} images)", [*imagehub, "image", "list", "--json"]),
        ]
        base = None
        print(f"{'what':44}{'median':>9}{'x python':>10}{'cpu':>8}{'target':>9}  verdict")
        for label, command in cases:
            elapsed, cpu = median_seconds(command, env, options.repeat)
            base = base or elapsed
            verdict = "-" if command[1] == "-c" else ("ok" if elapsed < TARGET_SECONDS else "MISSED")
            print(
                f"{label:44}{elapsed * 1000:7.0f}ms{elapsed / base:9.1f}x{cpu * 1000:6.0f}ms"
                f"{TARGET_SECONDS * 1000:7.0f}ms  {verdict}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
