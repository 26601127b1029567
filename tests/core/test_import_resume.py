"""A worker killed mid-download: the next worker resumes from the bytes on disk; stalled imports end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from core.catalog.catalog import Catalog
from core.catalog.models import Status
from core.importer.job import staging_folder
from core.importer.submit import submit_import
from core.jobs import jobs
from core.jobs.worker import Worker
from tests.conftest import REPO, People
from tests.importkit import (
    OS,
    HttpBehaviour,
    http_server,
    image_row,
    leftovers,
    port_of,
    qemu_img,
    random_raw,
    run_job,
    sha256_of,
    wait_for,
)

WORKER = """
import sys
from core.catalog.catalog import open_catalog
from core.catalog.settings import load_settings
from core.jobs.worker import Worker
settings = load_settings(sys.argv[1])
settings.import_.allowed_ports = [int(sys.argv[2])]
Worker(open_catalog(settings), kinds=["import"], lease_seconds=1.0, poll_seconds=0.05).run_forever()
"""


def random_qcow2(folder: Path, mib: int = 8) -> Path:
    raw = random_raw(folder, "random.raw", mib)
    path = folder / "random.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    return path


def test_worker_killed_mid_download_is_resumed_by_the_next_worker(
    catalog: Catalog, people: People, config_path: Path, tmp_path: Path
) -> None:
    source = random_qcow2(tmp_path)
    size = source.stat().st_size
    held = 4 << 20
    behaviour = HttpBehaviour(files={"/disk.qcow2": source}, hold_after=held)
    with http_server(behaviour) as base:
        port = port_of(base)
        catalog.settings.import_.allowed_ports = [port]
        view = submit_import(catalog, people.owner, name="big", url=f"{base}/disk.qcow2", size_gb=20, **OS)
        staged = staging_folder(catalog, view["id"]) / "source"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(config_path), str(port)], cwd=REPO, env=env, stderr=subprocess.PIPE
        )
        try:
            assert behaviour.reached.wait(20), "the first worker never downloaded"
            wait_for(lambda: staged.exists() and staged.stat().st_size == held)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        behaviour.release.set()
        assert image_row(catalog, view["id"]).status == Status.IMPORTING
        run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    assert [r["range"] for r in behaviour.requests] == [None, f"bytes={held}-"]
    assert behaviour.sent == size  # not one byte fetched twice
    job = jobs.get(catalog.engine, view["job_id"])
    assert job is not None and job.attempts == 2 and job.state == jobs.DONE
    assert leftovers(catalog) == [f"images/{image.id}.raw"]


def test_an_import_without_progress_ends_stalled(catalog: Catalog, people: People, tmp_path: Path) -> None:
    source = random_qcow2(tmp_path, 2)
    behaviour = HttpBehaviour(files={"/disk.qcow2": source}, hold_after=1 << 20)
    catalog.settings.import_.stall_timeout_seconds = 1
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        view = submit_import(catalog, people.owner, name="slow", url=f"{base}/disk.qcow2", size_gb=20, **OS)
        worker = Worker(catalog, kinds=["import"], poll_seconds=0.05)
        try:
            assert worker.poll_once() == [view["job_id"]]
            assert behaviour.reached.wait(20)
            job = jobs.get(catalog.engine, view["job_id"])
            assert job is not None
            wait_for(lambda: jobs.stalled(catalog.engine, 1))  # one second without data
            worker.sweep()
        finally:
            behaviour.release.set()
            worker.join()
    image = image_row(catalog, view["id"])
    assert image.status == Status.IMPORT_FAILED
    assert image.error == "stalled: no data for 1 seconds"
    assert leftovers(catalog) == []


def test_max_concurrent_bounds_the_imports_a_worker_runs_at_once(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = random_qcow2(tmp_path, 2)
    behaviour = HttpBehaviour(files={"/a.qcow2": source, "/b.qcow2": source}, hold_after=1 << 20)
    catalog.settings.import_.max_concurrent = 1
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        first = submit_import(catalog, people.owner, name="a", url=f"{base}/a.qcow2", size_gb=20, **OS)
        second = submit_import(catalog, people.owner, name="b", url=f"{base}/b.qcow2", size_gb=20, **OS)
        worker = Worker(catalog, kinds=["import"], poll_seconds=0.05)
        try:
            assert worker.poll_once() == [first["job_id"]]
            assert behaviour.reached.wait(20)
            assert worker.poll_once() == []  # full: the second waits in the queue
            second_job = jobs.get(catalog.engine, second["job_id"])
            assert second_job is not None and second_job.state == jobs.QUEUED
            behaviour.release.set()
            assert worker.run_until(second["job_id"], timeout=60) is not None
        finally:
            behaviour.release.set()
            worker.join()
    assert image_row(catalog, first["id"]).status == Status.AVAILABLE
    assert image_row(catalog, second["id"]).status == Status.AVAILABLE


def _leave_a_finished_download(catalog: Catalog, image_id: str, source: Path, digest: str) -> None:
    """What a worker that died right after its download leaves in staging."""
    work = staging_folder(catalog, image_id)
    work.mkdir(parents=True)
    (work / "source").write_bytes(source.read_bytes())
    (work / "received.json").write_text(json.dumps({"sha256": digest, "size": source.stat().st_size}))


def _claim_and_die(catalog: Catalog, job_id: int) -> None:
    owner = jobs.worker_id("dead")
    assert jobs.claim(catalog.engine, owner, ["import"], lease_seconds=0.0) is not None  # expires at once


def test_a_finished_download_is_not_fetched_again_after_a_crash(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = random_qcow2(tmp_path, 2)
    behaviour = HttpBehaviour(files={"/disk.qcow2": source})
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        view = submit_import(catalog, people.owner, name="x", url=f"{base}/disk.qcow2", size_gb=20, **OS)
        _claim_and_die(catalog, view["job_id"])
        _leave_a_finished_download(catalog, view["id"], source, sha256_of(source))
        run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    assert behaviour.requests == []


def test_a_finished_download_damaged_by_a_crash_is_fetched_again(
    catalog: Catalog, people: People, tmp_path: Path
) -> None:
    source = random_qcow2(tmp_path, 2)
    behaviour = HttpBehaviour(files={"/disk.qcow2": source})
    with http_server(behaviour) as base:
        catalog.settings.import_.allowed_ports = [port_of(base)]
        view = submit_import(catalog, people.owner, name="x", url=f"{base}/disk.qcow2", size_gb=20, **OS)
        _claim_and_die(catalog, view["job_id"])
        damaged = tmp_path / "damaged.qcow2"
        damaged.write_bytes(source.read_bytes()[:-4096] + bytes(4096))  # the last page never reached the disk
        _leave_a_finished_download(catalog, view["id"], damaged, sha256_of(source))
        run_job(catalog, view["job_id"])
    image = image_row(catalog, view["id"])
    assert image.status == Status.AVAILABLE, image.error
    assert image.sha256 == sha256_of(source)
    assert [r["range"] for r in behaviour.requests] == [None]
