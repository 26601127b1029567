"""Catalog at scale: 100,000 images; time and peak memory of listing, filtering and the Excel export.

Run: .venv/bin/python bench/catalog.py [--images N]. Each command runs as its own `imagehub`
process (as a user would run it); peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from core.bootstrap import initialise  # noqa: E402
from core.models import Image, IssuedId, Tenant  # noqa: E402
from core.settings import load_settings  # noqa: E402

STATUSES = ["available"] * 6 + ["importing", "import_failed", "creating", "deleted"]
PLATFORMS = [("Linux", "CentOS", "7.9"), ("Linux", "Ubuntu", "16.04"), ("Windows", "Windows", "2016")]


WORDS = ["web", "db", "cache", "build"]


def build(config: Path, count: int, words: list[str] = WORDS) -> None:
    """A catalog of `count` images in two tenants, inserted in bulk (also used by bench/tui.py)."""
    catalog, _ = initialise(load_settings(config))
    now = datetime.now(UTC)
    rng = random.Random(7)
    with catalog.engine.begin() as connection:
        tenant_ids = []
        for name in ("bench-a", "bench-b"):
            result = connection.execute(insert(Tenant).values(name=name, created_at=now))
            tenant_ids.append(result.inserted_primary_key[0])
        rows, ids = [], []
        for n in range(count):
            image_id = f"img-{n:08d}"
            os_type, platform, version = PLATFORMS[n % 3]
            status = rng.choice(STATUSES)
            rows.append({
                "id": image_id, "name": f"image-{n:06d}-{rng.choice(words)}",
                "description": "benchmark image", "tenant_id": tenant_ids[n % 2], "os_type": os_type,
                "platform": platform, "os_version": version, "arch": "x86_64", "status": status,
                "status_before_delete": "available" if status == "deleted" else None,
                "disk_format": "raw", "virtual_size": 20 * 1024**3, "target_size_gb": 20,
                "created_at": now - timedelta(seconds=n), "updated_at": now,
            })  # fmt: skip
            ids.append({"id": image_id, "created_at": now})
            if len(rows) == 10_000:
                connection.execute(insert(Image), rows)
                connection.execute(insert(IssuedId), ids)
                rows, ids = [], []
        if rows:
            connection.execute(insert(Image), rows)
            connection.execute(insert(IssuedId), ids)
    # A catalog in use is checkpointed as it goes; one 100k-row transaction leaves a 70 MB WAL that
    # the first reader of a new process would otherwise have to index (cold-start cost, not ours).
    catalog.dispose()
    database = sqlite3.connect(catalog.settings.data_dir / "catalog.db")
    database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    database.close()


def measure(args: list[str], config: Path) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one `imagehub` run, its output discarded."""
    env = dict(os.environ, IMAGEHUB_CONFIG=str(config))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", *args], stdout=subprocess.DEVNULL, env=env,
                               cwd=REPO)  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imagehub {' '.join(args)} failed")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagehub-bench-") as folder:
        config = Path(folder) / "imagehub.toml"
        config.write_text('[storage]\ndata_dir = "var"\n')
        started = time.perf_counter()
        build(config, options.images)
        print(f"built a catalog of {options.images:,} images in {time.perf_counter() - started:.1f} s")
        cases = [
            ("image list --json", ["image", "list", "--json"], 10.0, 300),
            ("filtered list (status + name)", ["image", "list", "--status", "available", "--filter", "db",
                                               "--json"], 5.0, 300),
            ("filtered page of 100", ["image", "list", "--status", "available", "--filter", "db", "--limit",
                                      "100", "--json"], 1.0, 100),
            ("image export-xlsx", ["image", "export-xlsx", str(Path(folder) / "images.xlsx")], 10.0, 300),
        ]  # fmt: skip
        print(f"{'what':34}{'time':>9}{'target':>9}{'peak MiB':>10}{'target':>8}  verdict")
        for label, args, time_target, memory_target in cases:
            elapsed, peak = measure(args, config)
            ok = elapsed <= time_target and peak <= memory_target
            print(f"{label:34}{elapsed:8.2f}s{time_target:8.1f}s{peak:10.0f}{memory_target:8d}  "
                  f"{'ok' if ok else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
