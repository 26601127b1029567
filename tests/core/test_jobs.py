"""Jobs claimed with a lease: exactly one worker at a time, takeover after expiry, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.errors import Conflict, Failed, Msg
from core.catalog.models import Job
from core.catalog.stored_errors import stored_reason
from core.jobs import jobs
from core.jobs.context import JobContext, LeaseLost
from core.jobs.worker import Worker
from tests.conftest import BACKENDS

pytestmark = BACKENDS


def _queue(catalog: Catalog, count: int, kind: str = "test") -> list[int]:
    with db.write_session(catalog.engine) as session:
        return [jobs.submit(session, kind, None, {"n": n}).id for n in range(count)]


def test_each_job_is_claimed_by_exactly_one_of_many_racing_workers(catalog: Catalog):
    ids = _queue(catalog, 40)
    claims: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claimer(n: int) -> None:
        start.wait()
        while (job := jobs.claim(catalog.engine, f"w{n}", ["test"], lease_seconds=60)) is not None:
            with lock:
                claims[job.id] += 1

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == sorted(ids)
    assert set(claims.values()) == {1}


def test_an_expired_lease_is_taken_over_and_the_old_holder_stops(catalog: Catalog):
    (job_id,) = _queue(catalog, 1)
    first = jobs.claim(catalog.engine, "dead-worker", ["test"], lease_seconds=60)
    assert first is not None and first.attempts == 1
    assert jobs.claim(catalog.engine, "other", ["test"]) is None  # held: nobody else gets it
    with db.write_session(catalog.engine) as session:  # the dead worker's lease runs out
        row = session.get(Job, job_id)
        row.lease_expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
    second = jobs.claim(catalog.engine, "survivor", ["test"])
    assert second is not None and second.id == job_id and second.attempts == 2
    assert not jobs.renew(catalog.engine, job_id, "dead-worker")  # the old holder learns it lost the job
    assert not jobs.finish(catalog.engine, job_id, "dead-worker", jobs.DONE)
    assert jobs.finish(catalog.engine, job_id, "survivor", jobs.DONE)
    assert jobs.get(catalog.engine, job_id).state == jobs.DONE


def test_release_requeues_at_once(catalog: Catalog):
    (job_id,) = _queue(catalog, 1)
    jobs.claim(catalog.engine, "w1", ["test"])
    jobs.release(catalog.engine, job_id, "w1")
    again = jobs.claim(catalog.engine, "w2", ["test"])
    assert again is not None and again.id == job_id


def test_catalog_wide_cap(catalog: Catalog):
    _queue(catalog, 3)
    assert jobs.claim(catalog.engine, "a", ["test"], max_running_total=2) is not None
    assert jobs.claim(catalog.engine, "b", ["test"], max_running_total=2) is not None
    assert jobs.claim(catalog.engine, "c", ["test"], max_running_total=2) is None


class _Recorder:
    kind = "record"

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.failures: list[tuple[int, str]] = []
        self.release = threading.Event()

    def run(self, ctx: JobContext) -> None:
        ctx.progress("working", 1, 2, force=True)
        if ctx.params.get("fail"):
            raise RuntimeError("boom")
        if ctx.params.get("refuse"):
            raise Failed(
                "vm {vm_id} could not be started, so it was not created: {exc}",
                vm_id="vm-7",
                exc=Conflict("image {image_id} is {status}", image_id="img-1", status=Msg("importing")),
            )
        if ctx.params.get("block"):
            while not self.release.wait(0.05):
                ctx.heartbeat()
        self.ran.append(ctx.job.id)

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        self.failures.append((job.id, reason))


def test_worker_runs_jobs_records_progress_and_failures(catalog: Catalog):
    recorder = _Recorder()
    with db.write_session(catalog.engine) as session:
        ok = jobs.submit(session, "record", None, {}).id
        bad = jobs.submit(session, "record", None, {"fail": True}).id
    worker = Worker(catalog, max_concurrent=2, kinds=["record"], handlers={"record": recorder}, poll_seconds=0.05)
    assert worker.run_until(ok, timeout=30).state == jobs.DONE
    assert worker.run_until(bad, timeout=30).state == jobs.FAILED
    worker.join()
    assert recorder.ran == [ok]
    assert recorder.failures == [(bad, "internal error: RuntimeError: boom")]
    done = jobs.get(catalog.engine, ok)
    assert (done.phase, done.bytes_done, done.bytes_total) == ("working", 1, 2)
    assert done.error is None and done.error_detail is None
    crashed = jobs.get(catalog.engine, bad)
    assert json.loads(crashed.error_detail) == {
        "template": "internal error: {kind}: {error}",
        "params": {"kind": "RuntimeError", "error": "boom"},
    }


def test_a_failed_job_keeps_its_reason_s_template_and_parameters(catalog: Catalog):
    """The English text as the CLI prints it, and beside it what a face needs to say it in its language."""
    recorder = _Recorder()
    with db.write_session(catalog.engine) as session:
        job_id = jobs.submit(session, "record", None, {"refuse": True}).id
    worker = Worker(catalog, kinds=["record"], handlers={"record": recorder}, poll_seconds=0.05)
    assert worker.run_until(job_id, timeout=30).state == jobs.FAILED
    worker.join()
    job = jobs.get(catalog.engine, job_id)
    text = "vm vm-7 could not be started, so it was not created: image img-1 is importing"
    assert job.error == text and recorder.failures == [(job_id, text)]
    assert json.loads(job.error_detail) == {
        "template": "vm {vm_id} could not be started, so it was not created: {exc}",
        "params": {
            "vm_id": "vm-7",
            "exc": {
                "template": "image {image_id} is {status}",
                "params": {"image_id": "img-1", "status": {"template": "importing", "params": {}}},
            },
        },
    }
    reason = stored_reason(job.error, job.error_detail)
    assert isinstance(reason, Msg) and reason == text
    nested = reason.params["exc"]
    assert isinstance(nested, Msg) and nested.template == "image {image_id} is {status}"
    assert isinstance(nested.params["status"], Msg) and nested == "image img-1 is importing"


def test_a_stopping_worker_gives_its_job_back(catalog: Catalog):
    recorder = _Recorder()
    with db.write_session(catalog.engine) as session:
        job_id = jobs.submit(session, "record", None, {"block": True}).id
    worker = Worker(catalog, max_concurrent=1, kinds=["record"], handlers={"record": recorder}, poll_seconds=0.05)
    assert worker.poll_once() == [job_id]
    worker.join()  # stop: the job thread sees LeaseLost at its next heartbeat and releases
    job = jobs.get(catalog.engine, job_id)
    assert job.state == jobs.QUEUED and job.lease_owner is None


def test_stalled_jobs_fail_with_a_reason(catalog: Catalog):
    recorder = _Recorder()
    with db.write_session(catalog.engine) as session:
        job_id = jobs.submit(session, "record", None, {}).id
    jobs.claim(catalog.engine, "silent-worker", ["record"], lease_seconds=3600)
    with db.write_session(catalog.engine) as session:
        row = session.get(Job, job_id)
        row.progress_at = utcnow() - timedelta(minutes=11)
        session.add(row)
    Worker(catalog, kinds=["record"], handlers={"record": recorder}).sweep()
    job = jobs.get(catalog.engine, job_id)
    assert job.state == jobs.FAILED and job.error == "stalled: no data for 10 minutes"
    assert json.loads(job.error_detail) == {
        "template": "stalled: no data for {span}",
        "params": {"span": {"template": "{count:g} minutes", "params": {"count": 10}}},
    }
    assert recorder.failures == [(job_id, "stalled: no data for 10 minutes")]
    assert not jobs.renew(catalog.engine, job_id, "silent-worker")


def test_lease_lost_stops_progress(catalog: Catalog):
    (job_id,) = _queue(catalog, 1)
    job = jobs.claim(catalog.engine, "w1", ["test"])
    ctx = JobContext(catalog, job, "w1", 30, threading.Event())
    ctx.progress("downloading", 10, 100, force=True)
    with db.write_session(catalog.engine) as session:
        jobs.cancel(session, session.get(Job, job_id))
    try:
        ctx.progress("downloading", 20, 100, force=True)
    except LeaseLost:
        pass
    else:
        raise AssertionError("progress after cancellation must raise LeaseLost")
