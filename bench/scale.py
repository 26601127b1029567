"""Past one machine, on PostgreSQL: job throughput with 1, 2 and 4 workers, and listing at 1,000,000 images.

`image list --json` of every image streams (a server-side cursor, a chunk of rows at a time): its peak
memory is measured at 100,000 images and again at the full count, and must stay flat (within 1.2x).

Starts a throwaway PostgreSQL cluster (Debian's server binaries) in a temporary folder on a free
loopback port, or uses `--url postgresql+psycopg://...` if given. Prints each figure beside its target.
Run: .venv/bin/python bench/scale.py [--images 1000000] [--jobs 2000] [--no-jobs]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.catalog import db  # noqa: E402
from core.catalog.catalog import open_catalog  # noqa: E402
from core.catalog.settings import load_settings  # noqa: E402
from core.images.images import ImageQuery, list_images  # noqa: E402
from core.jobs import jobs  # noqa: E402
from core.rules.access import Actor  # noqa: E402
from core.setup.bootstrap import initialise  # noqa: E402

LIST_TARGET_MS = 50.0


def _settings(folder: Path, url: str):
    config = folder / "imagehub.toml"
    config.write_text(f'[storage]\ndata_dir = "var"\n[database]\nurl = "{url}"\n')
    return load_settings(config)


def _drain(folder: str, url: str, ready, go, results) -> None:
    catalog = open_catalog(_settings(Path(folder), url))
    owner = jobs.worker_id("bench")
    ready.release()
    go.wait()
    done = 0
    while (job := jobs.claim(catalog.engine, owner, ["bench"])) is not None:
        jobs.renew(catalog.engine, job.id, owner, progressed=True, phase="working", bytes_done=1)
        jobs.finish(catalog.engine, job.id, owner, jobs.DONE)
        done += 1
    results.put(done)
    catalog.dispose()


def bench_jobs(folder: Path, url: str, count: int) -> None:
    """Workers are separate processes, started and connected before the clock starts."""
    catalog = open_catalog(_settings(folder, url))
    context = multiprocessing.get_context("spawn")
    print(f"{'job throughput':34}{'jobs/s':>10}  (claim + one progress report + finish, each a transaction)")
    for workers in (1, 2, 4):
        with db.write_session(catalog.engine) as session:
            for _ in range(count):
                jobs.submit(session, "bench", None)
        ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
        processes = [context.Process(target=_drain, args=(str(folder), url, ready, go, results))
                     for _ in range(workers)]  # fmt: skip
        for process in processes:
            process.start()
        for _ in processes:
            ready.acquire()
        started = time.perf_counter()
        go.set()
        finished = sum(results.get() for _ in processes)
        elapsed = time.perf_counter() - started
        for process in processes:
            process.join()
        assert finished == count, (finished, count)
        print(f"{f'{workers} worker(s)':34}{count / elapsed:10.0f}")
    catalog.dispose()


def fill_images(url: str, count: int, start: int = 0) -> None:
    """Images number `start` to `start + count - 1` (the tenants are made with the first)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as connection:
        tenants = [
            connection.execute(
                "INSERT INTO tenant (name, created_at) VALUES (%s, now()) ON CONFLICT (name) DO UPDATE"
                " SET name = EXCLUDED.name RETURNING id", (name,)
            ).fetchone()[0]
            for name in ("scale-a", "scale-b", "scale-c", "scale-d")
        ]  # fmt: skip
        columns = ("id, name, description, tenant_id, os_type, platform, os_version, arch, status, disk_format, "
                   "virtual_size, target_size_gb, created_at, updated_at")  # fmt: skip
        statuses = ["available"] * 7 + ["importing", "import_failed", "deleted"]
        words = ["web", "db", "cache", "build", "mail", "proxy", "batch", "etl"]
        with connection.cursor().copy(f"COPY image ({columns}) FROM STDIN") as copy:
            for n in range(start, start + count):
                copy.write_row((
                    f"img-{n:08d}", f"{words[(n // 4) % 8]}-{n:07d}", "", tenants[n % 4], "Linux", "CentOS", "7.9",
                    "x86_64", statuses[n % 10], "raw", 20 * 1024**3, 20, now - timedelta(seconds=n), now,
                ))  # fmt: skip
        connection.execute("ANALYZE image")


def timed(fn, repeat: int = 15) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def list_json(folder: Path) -> tuple[float, float, int]:
    """`imagehub image list --json` (the admin: every tenant) as its own process: wall s, peak RSS MiB, bytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(folder / "imagehub.toml")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "image", "list", "--json"], stdout=subprocess.PIPE,
                               env=env, cwd=REPO)  # fmt: skip
    assert process.stdout is not None
    size = 0
    while chunk := process.stdout.read(1 << 20):
        size += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("imagehub image list --json failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, size


def bench_listing(folder: Path, url: str, count: int) -> None:
    catalog = open_catalog(_settings(folder, url))
    first = min(count, 100_000)
    started = time.perf_counter()
    fill_images(url, first)
    print(f"filled {first:,} images in {time.perf_counter() - started:.0f} s")
    small = list_json(folder)
    if count > first:
        started = time.perf_counter()
        fill_images(url, count - first, start=first)
        print(f"filled {count - first:,} more images in {time.perf_counter() - started:.0f} s")
    large = list_json(folder)
    print(f"{'image list --json (streamed)':38}{'time':>9}{'peak MiB':>10}{'MB out':>9}")
    for label, (elapsed, peak, size) in ((f"{first:,} images", small), (f"{count:,} images", large)):
        print(f"{label:38}{elapsed:8.1f}s{peak:10.0f}{size / 1e6:9.0f}")
    flat = large[1] <= small[1] * 1.2
    print(
        f"{'peak memory, large / small':38}{large[1] / small[1]:8.2f}x  target <= 1.20x  {'ok' if flat else 'MISSED'}"
    )
    admin = Actor(1, "admin", "admin", None, None)
    owner = Actor(2, "scale-owner", "owner", None, 1)
    cases = [
        ("page of 100 (admin, all tenants)", admin, ImageQuery(limit=100)),
        ("page of 100 (one tenant)", owner, ImageQuery(limit=100)),
        ("page 50 of 100 (offset 5,000)", owner, ImageQuery(limit=100, offset=5000)),
        ("filtered: available + 'db' (admin)", admin, ImageQuery(status="available", text="db", limit=100)),
        ("filtered: available + 'db' (tenant)", owner, ImageQuery(status="available", text="db", limit=100)),
        ("filtered: rare name '0424242'", admin, ImageQuery(text="0424242", limit=100)),
        ("filtered: recycle bin (tenant)", owner, ImageQuery(status="deleted", limit=100)),
        ("filtered: no match 'nothing-here'", owner, ImageQuery(text="nothing-here", limit=100)),
    ]
    print(f"{'listing':38}{'median':>9}{'target':>9}  verdict")
    for label, actor, query in cases:
        ms = timed(lambda a=actor, q=query: list_images(catalog, a, q))
        print(f"{label:38}{ms:7.1f}ms{LIST_TARGET_MS:7.0f}ms  {'ok' if ms <= LIST_TARGET_MS else 'MISSED'}")
    catalog.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--no-jobs", action="store_true", help="skip the job throughput part")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagehub-scale-") as name:
        folder = Path(name)
        if options.url:
            run(folder, options.url, options)
            return
        from tests.postgres import start_cluster

        for cluster in start_cluster():
            run(folder, cluster.url(cluster.create_database()), options)


def run(folder: Path, url: str, options: argparse.Namespace) -> None:
    catalog, _ = initialise(_settings(folder, url))
    catalog.dispose()
    if not options.no_jobs:
        bench_jobs(folder, url, options.jobs)
    bench_listing(folder, url, options.images)


if __name__ == "__main__":
    main()
