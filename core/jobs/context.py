"""What a job handler is given and must honour: its `JobContext` (progress, which renews the lease) and
`LeaseLost`, raised when this worker no longer holds the job (cancelled, or taken over after a stall);
the handler must then stop without touching the image further."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.catalog.catalog import Catalog
from core.catalog.models import Job, Phase
from core.jobs import jobs


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
        phase: Phase,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        *,
        force: bool = False,
        progressed: bool = True,
    ) -> None:
        """Store progress (at most about once a second unless `force`) and renew the lease."""
        self._report(phase, bytes_done, bytes_total, force=force, progressed=progressed)

    def heartbeat(self) -> None:
        """Renew the lease without claiming progress (e.g. during a long qemu-img run)."""
        self._report(self.job.phase or Phase.RUNNING, force=True, progressed=False)

    def _report(
        self,
        phase: str,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        *,
        force: bool,
        progressed: bool,
    ) -> None:
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
