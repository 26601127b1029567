"""The image lifecycle: which operation each status allows. The one place this is decided.

creating ──────────────┐
importing ─┬─> available ──delete──> deleting ──> deleted (recycle bin) ──destroy──> gone
           └─> import_failed ─delete─┘               └──restore──> status before deletion
"""

from __future__ import annotations

from enum import StrEnum

from core.catalog.errors import N_, Conflict, Either, Msg
from core.catalog.models import Status


class Operation(StrEnum):
    EDIT = "edit"
    DELETE = "delete"
    RESTORE = "restore"
    DESTROY = "destroy"
    CREATE_VM = "create_vm"
    DOWNLOAD = "download"


ALL_STATUSES: frozenset[str] = frozenset(s.value for s in Status)

ALLOWED: dict[Operation, frozenset[str]] = {
    Operation.EDIT: ALL_STATUSES,
    Operation.DELETE: frozenset({Status.AVAILABLE, Status.IMPORT_FAILED}),
    Operation.RESTORE: frozenset({Status.DELETED}),
    Operation.DESTROY: frozenset({Status.DELETED}),
    Operation.CREATE_VM: frozenset({Status.AVAILABLE}),
    Operation.DOWNLOAD: frozenset({Status.AVAILABLE}),
}

# Statuses in which work is under way and a worker owns the image.
TRANSIENT: frozenset[str] = frozenset({Status.CREATING, Status.IMPORTING, Status.DELETING})

# One refusal per operation, so that each reads whole in every language.
_REFUSAL = {
    Operation.EDIT: N_("image {image_id} is {status}; it can be edited only when {allowed}"),
    Operation.DELETE: N_("image {image_id} is {status}; it can be deleted only when {allowed}"),
    Operation.RESTORE: N_("image {image_id} is {status}, not in the recycle bin; only deleted images can be restored"),
    Operation.DESTROY: N_("image {image_id} is {status}, not in the recycle bin; only deleted images can be destroyed"),
    Operation.CREATE_VM: N_("image {image_id} is {status}; it can be used to create a VM only when {allowed}"),
    Operation.DOWNLOAD: N_("image {image_id} is {status}; it can be downloaded only when {allowed}"),
}


def allows(status: str, operation: Operation) -> bool:
    return status in ALLOWED[operation]


def require(image_id: str, status: str, operation: Operation) -> None:
    """Raise Conflict (exit 5) unless `operation` is allowed in `status`."""
    if allows(status, operation):
        return
    allowed = Either(Msg(value) for value in sorted(ALLOWED[operation]))
    raise Conflict(_REFUSAL[operation], image_id=image_id, status=Msg(status), allowed=allowed)
