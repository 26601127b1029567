"""Deleted accounts keep their row (`deleted_at`); names are unique among live accounts only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_account_name", "account")
    op.create_index("ix_account_name", "account", ["name"], unique=True, sqlite_where=LIVE, postgresql_where=LIVE)


def downgrade() -> None:
    # Without the column a deleted account would look alive, and its name may have been given out
    # again: keep the row (links name it) under a name no account can take ('~'), with no rights.
    op.drop_index("ix_account_name", "account")
    op.execute(
        "UPDATE account SET name = '~deleted-' || CAST(id AS VARCHAR), role = 'deleted', perm = NULL,"
        " tenant_id = NULL WHERE deleted_at IS NOT NULL"
    )
    op.create_index("ix_account_name", "account", ["name"], unique=True)
    with op.batch_alter_table("account") as batch:
        batch.drop_column("deleted_at")
