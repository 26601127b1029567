"""The job worker: claims jobs from the catalog and runs each in a thread of its own.

Which handler runs which job kind is the table in `core.jobs.handlers`. A handler reports progress
through its `JobContext`, which renews the lease; when the lease is lost `progress` raises `LeaseLost`
(`core.jobs.context`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlmodel import Session

from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError, Msg
from core.catalog.models import Job
from core.jobs import jobs
from core.jobs.context import JobContext, JobHandler, LeaseLost
from core.jobs.handlers import HANDLERS

log = logging.getLogger("imagehub.worker")


def _failure_recorder(handler: JobHandler | None, job: Job, reason: str) -> Callable[[Session], None] | None:
    """The handler's in-transaction failure write, if it has one (test doubles may not)."""
    record = getattr(handler, "record_failure", None)
    if record is None:
        return None
    return lambda session: record(session, job, reason)


class Worker:
    """Claims and runs up to `max_concurrent` jobs at once until `stop` is set."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_concurrent: int | None = None,
        kinds: Iterable[str] | None = None,
        lease_seconds: float | None = None,
        poll_seconds: float = 0.5,
        label: str = "worker",
        max_running_total: int | None = None,
        only_job: int | None = None,
        handlers: Mapping[str, JobHandler] | None = None,
    ) -> None:
        self.catalog = catalog
        self.max_concurrent = max_concurrent or catalog.settings.import_.max_concurrent
        self.kinds = list(kinds) if kinds is not None else None
        self.lease_seconds = lease_seconds or catalog.settings.import_.job_lease_seconds
        self.poll_seconds = poll_seconds
        self.owner = jobs.worker_id(label)
        self.max_running_total = max_running_total or catalog.settings.import_.max_concurrent_total or None
        # a worker for one job only (the CLI's --wait when no server runs): it never takes other work
        self.only_job = only_job
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self.on_finished: Callable[[int, str], None] | None = None
        # the table itself unless given: read at each claim, so that a kind added to it is seen
        self.handlers = HANDLERS if handlers is None else handlers

    def wake(self) -> None:
        self._wake.set()

    def _reap(self) -> None:
        with self._lock:
            for job_id in [j for j, t in self._threads.items() if not t.is_alive()]:
                del self._threads[job_id]

    @property
    def running(self) -> int:
        self._reap()
        return len(self._threads)

    def poll_once(self) -> list[int]:
        """Claim as many jobs as there is room for and start them; returns their IDs."""
        started: list[int] = []
        kinds = self.kinds if self.kinds is not None else list(self.handlers)
        limit = 1 if self.only_job is not None else self.max_concurrent
        while not self.stop.is_set() and self.running < limit:
            job = jobs.claim(
                self.catalog.engine, self.owner, kinds, self.lease_seconds, self.max_running_total, self.only_job
            )
            if job is None:
                break
            assert job.id is not None
            thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job.id}", daemon=True)
            with self._lock:
                self._threads[job.id] = thread
            thread.start()
            started.append(job.id)
        return started

    def _run(self, job: Job) -> None:
        assert job.id is not None
        handler = self.handlers.get(job.kind)
        ctx = JobContext(self.catalog, job, self.owner, self.lease_seconds, self.stop)
        state: str = jobs.DONE
        try:
            if handler is None:
                raise ImagehubError("no handler for job kind {kind}", kind=job.kind)
            log.info("job %s (%s, image %s) started, attempt %s", job.id, job.kind, job.image_id, job.attempts)
            handler.run(ctx)
            if not jobs.finish(self.catalog.engine, job.id, self.owner, jobs.DONE):
                state = "lost"
        except LeaseLost:
            state = "lost"
            if self.stop.is_set():
                jobs.release(self.catalog.engine, job.id, self.owner)
                state = "released"
            log.info("job %s: %s", job.id, state)
        except Exception as exc:
            # a Msg: the job's and the image's error keep its template and parameters (error_detail)
            reason = (
                exc.message
                if isinstance(exc, ImagehubError)
                else Msg("internal error: {kind}: {error}", kind=type(exc).__name__, error=str(exc))
            )
            if not isinstance(exc, ImagehubError):
                log.exception("job %s crashed", job.id)
            state = jobs.FAILED
            also = _failure_recorder(handler, job, reason)
            if jobs.finish(self.catalog.engine, job.id, self.owner, jobs.FAILED, reason, also) and handler is not None:
                try:
                    handler.failed(self.catalog, job, reason)
                except Exception:
                    log.exception("job %s: recording the failure failed", job.id)
            log.info("job %s failed: %s", job.id, reason)
        finally:
            if self.on_finished is not None:
                self.on_finished(job.id, state)
            self._wake.set()

    def sweep(self) -> None:
        """Fail jobs that made no progress for the stall timeout, whichever worker holds them, and
        uploads whose link ended before their last byte."""
        from core.images.images import finish_pending_deletions
        from core.links.uploads import sweep as sweep_uploads

        finish_pending_deletions(self.catalog)
        sweep_uploads(self.catalog)
        timeout = self.catalog.settings.import_.stall_timeout_seconds
        for job in jobs.stalled(self.catalog.engine, timeout):
            span = (
                Msg("{count:g} minutes", count=timeout / 60) if timeout >= 60 else Msg("{count} seconds", count=timeout)
            )
            reason = Msg("stalled: no data for {span}", span=span)
            handler = self.handlers.get(job.kind)
            also = _failure_recorder(handler, job, reason)
            finished = jobs.finish(self.catalog.engine, job.id or 0, job.lease_owner or "", jobs.FAILED, reason, also)
            if finished and handler is not None:
                handler.failed(self.catalog, job, reason)

    def run_forever(self) -> None:
        """Poll and run jobs until `stop` is set; then release what is still running."""
        last_sweep = 0.0
        while not self.stop.is_set():
            try:
                self.poll_once()
                if time.monotonic() - last_sweep > 5:
                    self.sweep()
                    last_sweep = time.monotonic()
            except Exception:
                log.exception("worker poll failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
        self.join()

    def run_until(self, job_id: int, timeout: float | None = None) -> Job | None:
        """Work until job `job_id` has ended (used by the CLI's --wait when no server runs)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stop.is_set():
            self.poll_once()
            job = jobs.get(self.catalog.engine, job_id)
            if job is None or job.state not in jobs.ACTIVE_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
        return jobs.get(self.catalog.engine, job_id)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for running job threads (after `stop`, they release their jobs)."""
        self.stop.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)


def SingleJobWorker(catalog: Catalog, job_id: int, **kwargs: Any) -> Worker:
    """A worker for this one job only; if another worker holds it, it only waits for it to end."""
    return Worker(catalog, only_job=job_id, max_concurrent=1, **kwargs)
