"""Indexes for listing and job claiming at a million rows (PostgreSQL: trigram index for name search).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_image_created_id", "image", ["created_at", "id"])
    op.create_index("ix_image_tenant_created_id", "image", ["tenant_id", "created_at", "id"])
    op.create_index("ix_image_tenant_status_created_id", "image", ["tenant_id", "status", "created_at", "id"])
    op.create_index("ix_image_status_created_id", "image", ["status", "created_at", "id"])
    op.drop_index("ix_image_tenant_status_created", "image")
    op.drop_index("ix_image_status_created", "image")
    op.create_index("ix_job_state_id", "job", ["state", "id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Substring search on names (LIKE '%x%') needs trigrams; skip quietly where the extension
        # cannot be created (no superuser): listing still works, rare-name searches scan.
        has_trgm = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
        if has_trgm:
            with bind.begin_nested():
                try:
                    bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                except sa.exc.DBAPIError:
                    has_trgm = None
        if has_trgm:
            op.execute("CREATE INDEX ix_image_name_trgm ON image USING gin (lower(name) gin_trgm_ops)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_image_name_trgm")
    op.drop_index("ix_job_state_id", "job")
    op.create_index("ix_image_status_created", "image", ["status", "created_at"])
    op.create_index("ix_image_tenant_status_created", "image", ["tenant_id", "status", "created_at"])
    for name in ("ix_image_status_created_id", "ix_image_tenant_status_created_id", "ix_image_tenant_created_id",
                 "ix_image_created_id"):  # fmt: skip
        op.drop_index(name, "image")
