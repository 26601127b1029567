"""Alembic environment: migrates the engine handed over by core.catalog.db (online mode only)."""

from __future__ import annotations

import sqlmodel  # noqa: F401  (types used by migration scripts)
from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import core.catalog.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=engine.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # several nodes starting at once: one migrates, the others wait, then find it done
                connection.execute(text("SELECT pg_advisory_xact_lock(8212000)"))
            context.run_migrations()
        connection.commit()


run_migrations_online()
