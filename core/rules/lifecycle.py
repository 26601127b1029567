"""The image lifecycle: which operation each status allows, and the one function that changes an
image's status (`transition`). The one place both are decided.

creating ──────────────┐
importing ─┬─> available ──delete──> deleting ──> deleted (recycle bin) ──destroy──> gone
           └─> import_failed ─delete─┘               └──restore──> status before deletion
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session

from core.catalog import audit
from core.catalog.clock import utcnow
from core.catalog.errors import N_, Conflict, Either, Msg
from core.catalog.models import Image, Status
from core.rules.display import STATUS_WORDS


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
    # Statuses in people's words (`import failed`), which the TUI translates in turn.
    allowed = Either(Msg(STATUS_WORDS[value]) for value in sorted(ALLOWED[operation]))
    raise Conflict(_REFUSAL[operation], image_id=image_id, status=Msg(STATUS_WORDS[status]), allowed=allowed)


# Every status change an image may make: from-status -> allowed to-statuses (the diagram above).
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.CREATING: frozenset({Status.AVAILABLE, Status.IMPORT_FAILED}),  # a capture ends
    Status.IMPORTING: frozenset({Status.AVAILABLE, Status.IMPORT_FAILED}),  # an import ends
    Status.AVAILABLE: frozenset({Status.DELETING}),
    Status.IMPORT_FAILED: frozenset({Status.DELETING}),
    Status.DELETING: frozenset({Status.DELETED}),
    Status.DELETED: frozenset({Status.AVAILABLE, Status.IMPORT_FAILED}),  # restore: the status before deletion
}


class IllegalTransition(RuntimeError):
    """A status change the lifecycle does not allow was attempted: a bug in the caller, not user input
    (users are refused earlier, by `require`)."""

    def __init__(self, image_id: str, from_status: str, to_status: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(from_status, frozenset()))) or "nothing"
        super().__init__(
            f"image {image_id}: illegal status change {from_status} -> {to_status} (from {from_status}: {allowed})"
        )


def transition(
    session: Session,
    image: Image,
    to_status: Status,
    *,
    actor: str,
    action: str | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    now: datetime | None = None,
    **detail: Any,
) -> None:
    """Move `image` to `to_status` in the caller's transaction: writes `status` and `updated_at`, keeps
    the recycle bin's bookkeeping (`status_before_delete` on entering `deleting`, `deleted_at` on
    entering `deleted`, both cleared on restore) and, when `action` is given, the audit entry
    by `actor` (`action`, `outcome`, `reason`, `detail`). Raises IllegalTransition, writing nothing,
    if the table does not allow the change."""
    from_status = image.status
    if to_status not in TRANSITIONS.get(from_status, frozenset()):
        raise IllegalTransition(image.id, from_status, to_status)
    now = now or utcnow()
    if to_status == Status.DELETING:
        image.status_before_delete = from_status
    elif to_status == Status.DELETED:
        image.deleted_at = now
    elif from_status == Status.DELETED:
        image.status_before_delete = None
        image.deleted_at = None
    image.status = to_status
    image.updated_at = now
    session.add(image)
    if action is not None:
        audit.record(session, actor, action, image.id, outcome, reason, **detail)
