"""The job worker: claims jobs from the catalog and runs each in a thread of its own.

Job kinds register a `JobHandler` with `register`; the worker imports the modules listed in
`HANDLER_MODULES` so that every kind is known wherever a worker runs (`imagehub serve`, the CLI's
`--wait`, the TUI's embedded worker). A handler reports progress through its `JobContext`, which
renews the lease; when the lease is lost (cancelled, or taken over after a stall) `progress`
raises `LeaseLost` and the handler must stop without touching the image further.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session

from core import jobs
from core.catalog import Catalog
from core.errors import ImagehubError
from core.models import Job

log = logging.getLogger("imagehub.worker")

HANDLER_MODULES = ("core.importer.job", "core.exports", "core.capture")


class LeaseLost(Exception):
    """This worker no longer holds the job: stop at once, touch nothing."""


class JobHandler(Protocol):
    kind: str

    def run(self, ctx: JobContext) -> None:
        """Do the work; raise ImagehubError with a one-line reason for the user on failure."""

    def failed(self, catalog: Catalog, job: Job, reason: str) -> None:
        """Clean up after a failure (files); the resource's status is already written if the
        handler has `record_failure(session, job, reason)`, which runs inside the transaction that
        ends the job."""


def _failure_recorder(handler: JobHandler | None, job: Job, reason: str) -> Callable[[Session], None] | None:
    """The handler's in-transaction failure write, if it has one (test doubles may not)."""
    record = getattr(handler, "record_failure", None)
    if record is None:
        return None
    return lambda session: record(session, job, reason)


HANDLERS: dict[str, JobHandler] = {}


def register(handler: JobHandler) -> JobHandler:
    HANDLERS[handler.kind] = handler
    return handler


def load_handlers() -> dict[str, JobHandler]:
    for module in HANDLER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return HANDLERS


@dataclass
class JobContext:
    catalog: Catalog
    job: Job
    owner: str
    lease_seconds: float
    stop: threading.Event
    _last_renew: float = field(default=0.0)
    _rate_mark: tuple[float, int] = field(default=(0.0, 0))

    @property
    def params(self) -> dict[str, Any]:
        return jobs.params_of(self.job)

    def progress(
        self,
        phase: str,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        *,
        force: bool = False,
        progressed: bool = True,
    ) -> None:
        """Store progress (at most about once a second unless `force`) and renew the lease."""
        if self.stop.is_set():
            raise LeaseLost("worker stopping")
        now = time.monotonic()
        if not force and phase == self.job.phase and now - self._last_renew < 1.0:
            return
        fields: dict[str, Any] = {"phase": phase}
        if bytes_done is not None:
            mark_time, mark_bytes = self._rate_mark
            if mark_time and now > mark_time and bytes_done >= mark_bytes:
                fields["rate"] = (bytes_done - mark_bytes) / (now - mark_time)
            self._rate_mark = (now, bytes_done)
            fields["bytes_done"] = bytes_done
        if bytes_total is not None:
            fields["bytes_total"] = bytes_total
        if not jobs.renew(
            self.catalog.engine, self.job.id or 0, self.owner, self.lease_seconds, progressed=progressed, **fields
        ):
            raise LeaseLost(f"job {self.job.id} is no longer held by {self.owner}")
        self._last_renew = now
        self.job.phase = phase
        if bytes_done is not None:
            self.job.bytes_done = bytes_done
        if bytes_total is not None:
            self.job.bytes_total = bytes_total

    def heartbeat(self) -> None:
        """Renew the lease without claiming progress (e.g. during a long qemu-img run)."""
        self.progress(self.job.phase or "running", force=True, progressed=False)


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
        load_handlers()

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
        kinds = self.kinds if self.kinds is not None else list(HANDLERS)
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
        handler = HANDLERS.get(job.kind)
        ctx = JobContext(self.catalog, job, self.owner, self.lease_seconds, self.stop)
        state = jobs.DONE
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
            reason = str(exc) if isinstance(exc, ImagehubError) else f"internal error: {type(exc).__name__}: {exc}"
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
        """Fail jobs that made no progress for the stall timeout, whichever worker holds them."""
        from core.images import finish_pending_deletions

        finish_pending_deletions(self.catalog)
        timeout = self.catalog.settings.import_.stall_timeout_seconds
        for job in jobs.stalled(self.catalog.engine, timeout):
            minutes = timeout / 60
            span = f"{minutes:g} minutes" if timeout >= 60 else f"{timeout} seconds"
            reason = f"stalled: no data for {span}"
            handler = HANDLERS.get(job.kind)
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
