"""Links of two kinds: `download` (one image) and `workbook` (an Excel export of the image list).

A workbook link names no image, and an admin's workbook (every tenant) no tenant either.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("link") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="download"))
        batch.alter_column("image_id", existing_type=sa.String(32), nullable=True)
        batch.alter_column("tenant_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM link WHERE kind <> 'download'")
    with op.batch_alter_table("link") as batch:
        batch.alter_column("tenant_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("image_id", existing_type=sa.String(32), nullable=False)
        batch.drop_column("kind")
