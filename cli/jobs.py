"""`imagehub image import`: the CLI face of core.importer. Parses, calls core, shows progress.

`--wait` returns when the import has ended (exit 1 if it failed, with the reason): when an
`imagehub serve` runs, its worker does the work and this only follows the job; otherwise the CLI
runs a worker for this one job itself. Progress goes to stderr: a bar on a terminal, plain lines
otherwise; with `--json` stdout holds exactly one JSON document (the image, with `job_id`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from cli.main import PROG, Context, emit_json, human_size
from core.catalog.errors import Invalid
from core.catalog.models import Job, Status
from core.images.images import get_image
from core.importer.submit import submit_import
from core.importer.upload import submit_upload
from core.jobs import jobs
from core.jobs.worker import SingleJobWorker

POLL_SECONDS = 0.2
SWEEP_SECONDS = 5.0
SETTLE_SECONDS = 30.0  # at most this long after the job ended for its outcome to reach the image
PENDING = (Status.IMPORTING, Status.CREATING)
BAR_WIDTH = 24


def _serve_running(ctx: Context) -> bool:
    from cli.tui import serve_running

    return serve_running(ctx.settings.data_dir)


class Progress:
    """Renders a job's progress: a bar redrawn in place on a terminal, else a line per change."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self.drawn = False

    def show(self, job: Job) -> None:
        phase = job.phase or job.state
        done, total = job.bytes_done or 0, job.bytes_total
        pct = min(100.0, 100.0 * done / total) if total else None
        if self.tty:
            filled = int(BAR_WIDTH * pct / 100) if pct is not None else 0
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            amount = f"{human_size(done)} of {human_size(total)}" if total else human_size(done)
            rate = f", {human_size(int(job.rate))}/s" if job.rate and phase == "downloading" else ""
            pct_text = f"{pct:3.0f}%" if pct is not None else "  ?%"
            line = f"[{bar}] {pct_text} {phase:<11} {amount}{rate}"
            if line != self.last:
                self.stream.write("\r" + line.ljust(len(self.last)))
                self.stream.flush()
                self.last, self.drawn = line, True
            return
        step = f"{phase} {int(pct // 10) * 10}%" if pct is not None else phase
        if step != self.last:
            self.stream.write(f"{step}\n")
            self.stream.flush()
            self.last = step

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def wait_for_job(ctx: Context, job_id: int, stream: TextIO = sys.stderr) -> Job | None:
    """Follow (and, when no server runs, do) the job until it ends."""
    worker = None if _serve_running(ctx) else SingleJobWorker(ctx.catalog, job_id, label="cli")
    progress = Progress(stream)
    last_sweep = time.monotonic()
    try:
        while True:
            if worker is not None:
                worker.poll_once()
                if time.monotonic() - last_sweep > SWEEP_SECONDS:  # no server runs: end stalled jobs here
                    worker.sweep()
                    last_sweep = time.monotonic()
            job = jobs.get(ctx.catalog.engine, job_id)
            if job is None or job.state not in jobs.ACTIVE_STATES:
                return job
            progress.show(job)
            time.sleep(POLL_SECONDS)
    finally:
        if worker is not None:
            worker.join()  # after Ctrl-C the job goes back to the queue, resumable
        progress.close()


def _image_fields(a: Any) -> dict[str, Any]:
    """What every import is given besides its source, as the command line has it."""
    return {
        "name": a.name,
        "description": a.description,
        "os_type": a.os_type,
        "arch": a.arch,
        "platform": a.platform,
        "os_version": a.os_version,
        "size_gb": a.size_gb,
        "sha256": a.sha256,
        "tenant": a.tenant,
    }


def cmd_image_import(ctx: Context) -> int:
    a = ctx.args
    if a.upload:
        return _upload(ctx)
    if a.bytes is not None or a.ttl is not None:
        raise Invalid("--bytes and --ttl go with --upload")
    url = sys.stdin.readline().strip() if a.url == "-" else a.url  # keeps credentials off the command line
    image = submit_import(ctx.catalog, ctx.actor, file=a.file, url=url, **_image_fields(a))
    return report_image_job(ctx, image, what="import", queued_as=f"importing (job {image['job_id']})")


UPLOAD_TOOLS = (
    ("curl (FTP)", "curl_ftp"),
    ("lftp", "lftp"),
    ("sftp", "sftp"),
    ("curl (HTTP)", "curl_http"),
    ("  resume", "curl_http_resume"),
    ("  OFFSET", "offset"),
    ("tus", "tus"),
)


def _upload(ctx: Context) -> int:
    a = ctx.args
    if a.bytes is None:
        raise Invalid("--upload needs --bytes N: the exact size of the file in bytes (`stat -c %s FILE`)")
    image = submit_upload(ctx.catalog, ctx.actor, size_bytes=a.bytes, ttl=a.ttl, **_image_fields(a))
    upload = image["upload"]
    if not a.json:
        print(
            f"{image['id']}: waiting for upload (job {image['job_id']}): send exactly {upload['size']} bytes"
            f" through link {upload['id']}, valid until {upload['expires_at']}"
        )
        print("Replace FILE with the file on your computer. Run a command again to resume after a cut:")
        for label, key in UPLOAD_TOOLS:
            value = upload["commands"][key]
            if key == "offset":
                value += "   (OFFSET: its Upload-Offset header, the bytes received so far)"
            elif key == "tus":
                value += "   (any tus 1.0 client: tuspy, tus-js-client, Uppy)"
            print(f"  {label + ':':13} {value}")
        sys.stdout.flush()
    return report_image_job(ctx, image, what="import", queued_as=None)


def settled_image(ctx: Context, image_id: str, job: Job | None) -> dict[str, Any]:
    """The image once its ended job's outcome is on it. A worker ends the job first and records the
    failure on the image in a second transaction (and a busy catalog can delay that one): wait for
    the image to leave `importing`/`creating`, a bounded time."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        image = get_image(ctx.catalog, ctx.actor, image_id)
        if image["status"] not in PENDING or job is None or time.monotonic() > deadline:
            return image
        time.sleep(POLL_SECONDS / 4)


def report_image_job(ctx: Context, image: dict[str, Any], *, what: str, queued_as: str | None) -> int:
    """After submitting an image's job (import, capture): wait if asked, print, exit 1 if it failed.

    With --wait the job's own outcome decides the exit status; the image row only adds detail."""
    job_id = image["job_id"]
    failure: str | None = None
    if ctx.args.wait:
        job = wait_for_job(ctx, job_id)
        image = {**settled_image(ctx, image["id"], job), "job_id": job_id}
        if image["status"] == Status.IMPORT_FAILED:
            failure = image["error"] or (job.error if job is not None else None) or "failed"
        elif job is None or job.state != jobs.DONE or image["status"] != Status.AVAILABLE:
            state = job.state if job is not None else "gone"
            failure = (job.error if job is not None else None) or f"job {job_id} ended {state}"
    elif image["status"] == Status.IMPORT_FAILED:
        failure = image["error"] or "failed"
    if ctx.args.json:
        emit_json(image)
    elif image["status"] == Status.AVAILABLE and failure is None:
        digest = f", sha256 {image['sha256']}" if image["sha256"] else ""
        print(f"{image['id']}: available ({image['disk_format']}, {human_size(image['virtual_size'])}{digest})")
    elif failure is None and queued_as is not None:
        print(f"{image['id']}: {queued_as}; `imagehub serve` or --wait runs it")
    if failure is not None:
        sys.stderr.write(f"{PROG}: error: {what} of {image['id']} failed: {failure}\n")
        return 1
    return 0
