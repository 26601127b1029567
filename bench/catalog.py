"""Catalog at scale: 100,000 images; time and peak memory of listing, filtering and the Excel export,
each beside the bare library doing the same job in the same run.

Run: .venv/bin/python bench/catalog.py [--images N] [--repeat R]. Each command runs as its own
`imagehub` process (as a user would run it); peak memory is that process's maximum resident set size.
Baselines, also separate processes on the same catalog file: `sqlite3` + one `json.dumps` of the same
rows as the same JSON document (for `image list --json`), and openpyxl's write-only mode appending the
same rows as plain tuples (for `image export-xlsx`). Each figure is the best of R runs (the machine
may be shared); CPU is user + system time of the process.
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

from core.catalog.models import Image, IssuedId, Tenant  # noqa: E402
from core.catalog.settings import load_settings  # noqa: E402
from core.setup.bootstrap import initialise  # noqa: E402

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


# The bare-library baselines: the same rows and the same output, with nothing of imagehub imported.
BASELINE_LIST = """
import json, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT i.id, i.name, i.description, t.name, i.os_type, i.platform, i.os_version, i.arch, i.status, i.error,"
    " i.disk_format, i.virtual_size, i.target_size_gb, i.sha256, i.source, i.created_at, i.updated_at,"
    " i.deleted_at FROM image i JOIN tenant t ON t.id = i.tenant_id WHERE i.status != 'deleted'"
    " ORDER BY i.created_at DESC, i.id DESC").fetchall()
stamp = lambda v: None if v is None else v[:10] + "T" + v[11:19] + "Z"
document = [{"id": r[0], "name": r[1], "description": r[2], "tenant": r[3], "os_type": r[4], "platform": r[5],
             "os_version": r[6], "arch": r[7], "os_name": f"{r[5]} {r[6]} {r[7]}", "status": r[8], "error": r[9],
             "disk_format": r[10], "virtual_size": r[11], "target_size_gb": r[12], "sha256": r[13],
             "source": r[14], "created_at": stamp(r[15]), "updated_at": stamp(r[16]), "deleted_at": stamp(r[17])}
            for r in rows]
sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\\n")
"""
BASELINE_XLSX = """
import sqlite3, sys
from datetime import datetime
from openpyxl import Workbook
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT i.name, i.id, i.os_type, i.platform || ' ' || i.os_version || ' ' || i.arch, i.status,"
    " i.virtual_size, i.description, i.created_at, t.name FROM image i JOIN tenant t ON t.id = i.tenant_id"
    " WHERE i.status != 'deleted' ORDER BY i.created_at DESC, i.id DESC")
workbook = Workbook(write_only=True)
sheet = workbook.create_sheet("Images")
sheet.append(("Name", "ID", "System type", "OS", "Status", "Size (GB)", "Description", "Created", "Tenant"))
for name, id, os_type, os_name, status, size, description, created, tenant in rows:
    sheet.append((name, id, os_type, os_name, status, None if size is None else round(size / 2**30, 2), description,
                  datetime.fromisoformat(created[:19]), tenant))
workbook.save(sys.argv[2])
"""


def measure(command: list[str], config: Path) -> tuple[float, float, float]:
    """Wall time (s), CPU time (s) and peak RSS (MiB) of one process, its output discarded."""
    env = dict(os.environ, IMAGEHUB_CONFIG=str(config))
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def best(command: list[str], config: Path, repeat: int) -> tuple[float, float, float]:
    """The fastest of `repeat` runs (time and CPU), with the largest peak RSS seen."""
    runs = [measure(command, config) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="imagehub-bench-") as folder:
        config = Path(folder) / "imagehub.toml"
        config.write_text('[storage]\ndata_dir = "var"\n')
        started = time.perf_counter()
        build(config, options.images)
        print(f"built a catalog of {options.images:,} images in {time.perf_counter() - started:.1f} s")
        database = str(Path(folder) / "var" / "catalog.db")
        imagehub = [sys.executable, "-m", "cli.main"]
        python = [sys.executable, "-c"]
        # label, command, time target (s), memory target (MiB), baseline label and command, ratio target
        cases = [
            ("image list --json", [*imagehub, "image", "list", "--json"], 2.0, 150,
             ("sqlite3 + json.dumps", [*python, BASELINE_LIST, database], 1.5)),
            ("filtered list (status + name)", [*imagehub, "image", "list", "--status", "available", "--filter", "db",
                                               "--json"], 5.0, 150, None),
            ("filtered page of 100", [*imagehub, "image", "list", "--status", "available", "--filter", "db",
                                      "--limit", "100", "--json"], 1.0, 100, None),
            ("image export-xlsx", [*imagehub, "image", "export-xlsx", str(Path(folder) / "images.xlsx")], None, 150,
             ("openpyxl write-only", [*python, BASELINE_XLSX, database, str(Path(folder) / "bare.xlsx")], 1.1)),
        ]  # fmt: skip
        print(f"{'what':34}{'time':>9}{'cpu':>9}{'target':>9}{'peak MiB':>10}{'target':>8}  verdict")
        for label, command, time_target, memory_target, baseline in cases:
            elapsed, cpu, peak = best(command, config, options.repeat)
            ok = (time_target is None or elapsed <= time_target) and peak <= memory_target
            target = f"{time_target:8.1f}s" if time_target else f"{'-':>9}"
            print(f"{label:34}{elapsed:8.2f}s{cpu:8.2f}s{target}{peak:10.0f}{memory_target:8d}  "
                  f"{'ok' if ok else 'MISSED'}")  # fmt: skip
            if baseline is None:
                continue
            base_label, base_command, ratio_target = baseline
            base_elapsed, base_cpu, base_peak = best(base_command, config, options.repeat)
            ratio, cpu_ratio = elapsed / base_elapsed, cpu / base_cpu
            print(f"{'  baseline: ' + base_label:34}{base_elapsed:8.2f}s{base_cpu:8.2f}s{'':9}{base_peak:10.0f}")
            print(f"{'  ratio (time, cpu)':34}{ratio:8.2f}x{cpu_ratio:8.2f}x{ratio_target:8.1f}x{'':18}  "
                  f"{'ok' if ratio <= ratio_target else 'MISSED'}")  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
