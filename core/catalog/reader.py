"""Read queries written once as SQL text with `:name` parameters, and a plain sqlite3 reader for them.

SQLAlchemy runs these queries for every catalog (`core.catalog.db.rows_in`). The command line's
listing path runs them on an up-to-date SQLite catalog through the stdlib's sqlite3
(`open_sqlite_reader`), which spares that path SQLAlchemy's import, most of its start-up time. Both
connect with the same settings (`configure_sqlite_connection`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# Runs one query (SQL text, `:name` parameters) and returns all its rows as tuples.
Rows = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]

# The newest migration in core/catalog/migrations/versions. Kept here so that opening a catalog (every
# CLI call) needs no Alembic import; tests/core/test_init.py fails if it differs from Alembic's head.
SCHEMA_HEAD = "0007"
# The catalog's own schema revision (Alembic's version table).
REVISION_QUERY = "SELECT version_num FROM alembic_version"

SQLITE_PREFIX = "sqlite:///"


def configure_sqlite_connection(connection: Any, busy_timeout_seconds: float) -> None:
    """WAL, busy timeout, foreign keys on; transactions are begun by the caller (`BEGIN` to read,
    `BEGIN IMMEDIATE` to write: a read-then-write transaction would otherwise fail at once with
    "database is locked")."""
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SqliteReader:
    """One read transaction on a SQLite catalog through sqlite3."""

    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        return self.connection.execute(sql, params).fetchall()

    def batches(self, sql: str, params: Mapping[str, Any], size: int) -> Iterator[list[Any]]:
        cursor = self.connection.execute(sql, params)
        while batch := cursor.fetchmany(size):
            yield batch

    def close(self) -> None:
        self.connection.close()


def open_sqlite_reader(database_url: str, busy_timeout_seconds: float) -> SqliteReader | None:
    """A read transaction on the SQLite catalog at `database_url` if its schema is current; None for
    anything else (another database, no file, an older schema, not SQLite at all). The caller then
    opens the catalog the one full way (core.catalog.catalog.open_catalog), which reports or migrates."""
    if not database_url.startswith(SQLITE_PREFIX):
        return None
    path = Path(database_url[len(SQLITE_PREFIX) :])
    if not path.is_absolute() or not path.is_file():
        return None
    connection = None
    try:
        connection = sqlite3.connect(path, timeout=busy_timeout_seconds)
        configure_sqlite_connection(connection, busy_timeout_seconds)
        connection.execute("BEGIN")
        revision = connection.execute(REVISION_QUERY).fetchone()
    except sqlite3.Error:
        revision = None
    if revision is None or revision[0] != SCHEMA_HEAD:
        if connection is not None:
            connection.close()
        return None
    assert connection is not None
    return SqliteReader(connection)
