"""The catalog's words: roles, perms, image statuses, job states and job phases (schema vocabulary).

Plain enums in a module of their own, so that what only reads them (the command line's listing path)
needs no SQLModel; core.catalog.models re-exports them beside the tables.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OWNER = "owner"
    MEMBER = "member"


class Perm(StrEnum):
    VIEW = "view"
    MANAGE = "manage"


class Status(StrEnum):
    CREATING = "creating"
    IMPORTING = "importing"
    IMPORT_FAILED = "import_failed"
    AVAILABLE = "available"
    DELETING = "deleting"
    DELETED = "deleted"


class JobState(StrEnum):
    WAITING = "waiting"  # an upload's import, until its bytes have all arrived (no worker may claim it)
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """What a running job is doing, as its worker reports it with `JobContext.progress`."""

    RUNNING = "running"  # a heartbeat before the first report
    WAITING_FOR_UPLOAD = "waiting for upload"  # an upload link made, no byte received yet
    UPLOADING = "uploading"  # bytes arriving through an upload link
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSPECTING = "inspecting"
    CONVERTING = "converting"
    RESIZING = "resizing"
    FINISHING = "finishing"
    CHECKSUM = "checksum"
    PUBLISHING = "publishing"


# A link's state: served (download) or open for writing (upload) when active or preparing, else the
# refusal's reason (core.links.links).
class LinkState(StrEnum):
    ACTIVE = "active"
    PREPARING = "preparing"
    REVOKED = "revoked"
    EXPIRED = "expired"
    IMAGE_UNAVAILABLE = "image_unavailable"  # deleted, gone, or no longer `available`
    TENANT_CHANGED = "tenant_changed"  # the image now belongs to another tenant
    ACCESS_LOST = "access_lost"  # its maker is deleted or no longer sees the tenant
    FILE_MISSING = "file_missing"  # the stored file (or the workbook) is gone: nothing can make it again
    EXPORT_FAILED = "export_failed"  # making the export or checksum failed; a new link tries again
    UPLOADED = "uploaded"  # an upload link whose bytes have all arrived: it takes no more
