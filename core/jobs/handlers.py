"""The table of job handlers: which code runs each job kind. The one place a job kind is wired in."""

from __future__ import annotations

from core.compute.capture import CaptureHandler
from core.images.exports import ExportJob
from core.importer.job import ImportHandler
from core.jobs.context import JobHandler

HANDLERS: dict[str, JobHandler] = {
    handler.kind: handler for handler in (ImportHandler(), ExportJob(), CaptureHandler())
}
