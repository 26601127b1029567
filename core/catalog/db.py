"""The one place that opens catalog connections and sessions, and runs schema migrations.

SQLite: WAL, busy timeout, foreign keys on, and `BEGIN IMMEDIATE` for write transactions
(without it a read-then-write transaction fails at once with "database is locked").
PostgreSQL: plain transactions; job claiming uses row locks (see core.jobs.jobs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from core.catalog.errors import Failed
from core.catalog.reader import REVISION_QUERY, Rows, configure_sqlite_connection
from core.catalog.reader import SCHEMA_HEAD as SCHEMA_HEAD

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_READ_ONLY = "imagehub_read_only"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, busy_timeout_seconds: float = 30.0) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False})
        _configure_sqlite(engine, busy_timeout_seconds)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: Engine, busy_timeout_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        configure_sqlite_connection(dbapi_connection, busy_timeout_seconds)  # we emit BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A write transaction: committed on success, rolled back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A read-only transaction (SQLite: a deferred BEGIN that never blocks writers)."""
    # Closing (not rolling back) ends the transaction without expiring the loaded objects.
    with Session(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False) as session:
        yield session


def rows_in(session: Session) -> Rows:
    """Runs a query of SQL text (core.catalog.reader) in the session's transaction."""
    connection = session.connection()

    def rows(sql: str, params: Mapping[str, Any]) -> Sequence[Any]:
        return connection.execute(text(sql), dict(params)).all()

    return rows


# SCHEMA_HEAD, the newest migration, is kept in core.catalog.reader (bump it there with a new migration).


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config  # Alembic only when migrating: it costs every CLI call 70 ms

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return SCHEMA_HEAD


def alembic_head_revision() -> str | None:
    """The head as Alembic computes it from the migration scripts (for the test that guards SCHEMA_HEAD)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The catalog's schema revision (Alembic's version table), None when it has none."""
    with engine.connect() as connection:
        try:
            return connection.execute(text(REVISION_QUERY)).scalar()
        except exc.DBAPIError:  # no version table: not initialised
            return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (Alembic); a catalog already there is left alone."""
    from alembic import command

    try:
        command.upgrade(alembic_config(engine), revision)
    except Exception as exc:  # a broken or foreign database: one line, not a traceback
        raise Failed("cannot migrate the catalog at {engine_url}: {exc}", engine_url=engine.url, exc=exc) from exc


def needs_upgrade(engine: Engine) -> bool:
    return current_revision(engine) != head_revision()
