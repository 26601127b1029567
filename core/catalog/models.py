"""Catalog tables (SQLModel). Queries live in the service modules, never here.

Timestamps are naive UTC datetimes (SQLite keeps no zone); `core.catalog.clock` converts them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Text, text
from sqlmodel import Field, SQLModel

from core.catalog.clock import utcnow

# The words, re-exported beside the tables (`from core.catalog.models import Status` keeps working).
from core.catalog.vocabulary import JobState as JobState
from core.catalog.vocabulary import Perm as Perm
from core.catalog.vocabulary import Phase as Phase
from core.catalog.vocabulary import Role as Role
from core.catalog.vocabulary import Status as Status


class Tenant(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Account(SQLModel, table=True):
    """A person's account. A deleted one keeps its row (links and history still name it) with
    `deleted_at` set; its name is unique among live accounts only, so it can be given out again."""

    __table_args__ = (
        Index(
            "ix_account_name",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    role: str = Field(max_length=16)
    perm: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None


class AccountKey(SQLModel, table=True):
    """An SSH public key that logs its account into the admin front door."""

    __tablename__ = "account_key"
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    fingerprint: str = Field(unique=True, max_length=128)
    public_key: str = Field(sa_column=Column(Text, nullable=False))
    comment: str = Field(default="", max_length=256)
    created_at: datetime = Field(default_factory=utcnow)


class IssuedId(SQLModel, table=True):
    """Every resource ID ever handed out, so that none is reused after a destroy."""

    __tablename__ = "issued_id"
    id: str = Field(primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class Image(SQLModel, table=True):
    __table_args__ = (
        Index("ix_image_created_id", "created_at", "id"),
        Index("ix_image_tenant_created_id", "tenant_id", "created_at", "id"),
        Index("ix_image_tenant_status_created_id", "tenant_id", "status", "created_at", "id"),
        Index("ix_image_status_created_id", "status", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=64, index=True)
    description: str = Field(default="", max_length=256)
    tenant_id: int = Field(foreign_key="tenant.id")
    os_type: str = Field(max_length=32)
    platform: str = Field(max_length=32)
    os_version: str = Field(max_length=32)
    arch: str = Field(max_length=16)
    status: str = Field(max_length=16)
    status_before_delete: str | None = Field(default=None, max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text))
    # the reason's template and parameters as JSON (core.catalog.stored_errors); NULL on older rows
    error_detail: str | None = Field(default=None, sa_column=Column(Text))
    disk_format: str | None = Field(default=None, max_length=16)
    virtual_size: int | None = Field(default=None, sa_column=Column(BigInteger))
    target_size_gb: int = 20
    sha256: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, sa_column=Column(Text))
    source_vm_id: str | None = Field(default=None, max_length=32)
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None


class Vm(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=64)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    image_id: str = Field(foreign_key="image.id", index=True)
    status: str = Field(default="stopped", max_length=16)
    driver: str = Field(default="none", max_length=16)
    arch: str = Field(default="x86_64", max_length=16)
    pid: int | None = None
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """Long work (import, export, capture) claimed by a worker with a lease."""

    __table_args__ = (Index("ix_job_state_lease", "state", "lease_expires_at"), Index("ix_job_state_id", "state", "id"))
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    image_id: str | None = Field(default=None, max_length=32, index=True)
    state: str = Field(default=JobState.QUEUED, max_length=16)
    phase: str | None = Field(default=None, max_length=32)
    bytes_done: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    bytes_total: int | None = Field(default=None, sa_column=Column(BigInteger))
    rate: float | None = None
    params: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    secret: str | None = Field(default=None, sa_column=Column(Text))
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_expires_at: datetime | None = None
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    progress_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Link(SQLModel, table=True):
    """A link (kind `download`: one file of one image; `workbook`: an Excel export of the image list,
    with no image and, for an admin's export of every tenant, no tenant; `upload`: the way in for the
    bytes of an importing image, `size` of them exactly); the catalog keeps only a hash of its token."""

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(default="download", max_length=16)
    image_id: str | None = Field(default=None, max_length=32, index=True)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id")
    account_id: int | None = Field(default=None, foreign_key="account.id")
    format: str = Field(max_length=16)
    filename: str = Field(max_length=128)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None
    bytes_served: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    size: int | None = Field(default=None, sa_column=Column(BigInteger))  # an upload's exact byte count


class AuditEvent(SQLModel, table=True):
    """Who did what to which resource, when, and whether it was allowed."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    target: str | None = Field(default=None, max_length=64, index=True)
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    detail: str | None = Field(default=None, sa_column=Column(Text))
