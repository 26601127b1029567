"""The image listing as one query in SQL text with `:name` parameters (core.catalog.reader): what
`image list`, the TUI's pages, the Excel export and the count read.

SQLAlchemy runs it for every catalog (core.images.images); the command line's listing runs it on an
up-to-date SQLite catalog through sqlite3 (`read_views`), so that `image list` needs no SQLAlchemy.
Access is the actor's (core.rules.actor): it sees only its tenants' images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.catalog.errors import Invalid
from core.catalog.reader import Rows, SqliteReader
from core.catalog.vocabulary import Status
from core.images.views import row_view
from core.rules.actor import Actor, visible_tenant_id, visible_tenant_ids


@dataclass(frozen=True)
class ImageQuery:
    """What a listing asks for. `status=None` lists every status but `deleted`."""

    tenant: str | None = None
    status: str | None = None
    text: str | None = None
    sort: str = "created_at"
    descending: bool = True
    limit: int | None = None
    offset: int = 0


# --sort keys and the column each orders by (then by ID, the same way).
SORTABLE = {
    "name": "image.name",
    "id": "image.id",
    "os_type": "image.os_type",
    "os": "image.platform",
    "arch": "image.arch",
    "status": "image.status",
    "size": "image.virtual_size",
    "created_at": "image.created_at",
    "updated_at": "image.updated_at",
}
# The columns a listing reads, in the order `core.images.views.row_view` unpacks them, then its timestamps.
VIEW_COLUMNS = (
    "image.id",
    "image.name",
    "image.description",
    "tenant.name",
    "image.os_type",
    "image.platform",
    "image.os_version",
    "image.arch",
    "image.status",
    "image.error",
    "image.error_detail",
    "image.disk_format",
    "image.virtual_size",
    "image.target_size_gb",
    "image.sha256",
    "image.source",
)
TIMESTAMP_COLUMNS = ("image.created_at", "image.updated_at", "image.deleted_at")
# Rows fetched per round trip; on PostgreSQL a server-side cursor, so memory stays flat for any count.
BATCH = 2000
_STAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'


def stamped(dialect: str, column: str) -> str:
    """`column` as the `YYYY-MM-DDTHH:MM:SSZ` string of `core.catalog.clock.iso`, formatted by the database
    once per row (truncated to the second like iso; no datetime object, no strftime in Python)."""
    if dialect == "sqlite":  # stored as UTC text `YYYY-MM-DD HH:MM:SS.ffffff`; strftime() would round to the ms
        return f"replace(substr({column}, 1, 19), ' ', 'T') || 'Z'"
    if dialect == "postgresql":  # timestamptz; to_char truncates fractions of a second
        return f"to_char(timezone('UTC', {column}), :stamp_format)"
    return column  # formatted by `core.images.views.stamp`


def _where(rows: Rows, actor: Actor, query: ImageQuery, params: dict[str, Any], dialect: str = "") -> str:
    """The FROM and WHERE clauses of what `actor` may see and `query` asks for (its parameters into `params`)."""
    conditions: list[str] = []
    visible = visible_tenant_ids(actor)
    if query.tenant:
        conditions.append("image.tenant_id = :tenant_id")
        params["tenant_id"] = visible_tenant_id(rows, actor, query.tenant)
    elif visible is not None:
        names = [f"visible_{n}" for n in range(len(visible))]
        params.update(zip(names, sorted(visible), strict=True))
        conditions.append(f"image.tenant_id IN ({', '.join(':' + n for n in names)})" if names else "1 = 0")
    if query.status:
        if query.status not in {s.value for s in Status}:
            raise Invalid(
                "status {query_status} is unknown; choose one of {choices}",
                query_status=query.status,
                choices=", ".join(s.value for s in Status),
            )
        conditions.append("image.status = :status")
        params["status"] = query.status
    else:
        conditions.append("image.status != :hidden_status")
        params["hidden_status"] = Status.DELETED.value
    if query.text:
        needle = query.text.strip().lower()
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.update(escape="\\", name_pattern=f"%{escaped}%")
        # SQLite's LIKE ignores ASCII case by itself (as lower() does): no function call per row there
        name = "image.name" if dialect == "sqlite" else "lower(image.name)"
        name_matches = f"{name} LIKE :name_pattern ESCAPE :escape"
        if needle.startswith("img-"):  # an ID (or its prefix) as well as a name
            params["id_pattern"] = f"{escaped}%"
            conditions.append(f"({name_matches} OR image.id LIKE :id_pattern ESCAPE :escape)")
        else:
            conditions.append(name_matches)
    return "FROM image JOIN tenant ON image.tenant_id = tenant.id WHERE " + " AND ".join(conditions)


def listing_sql(dialect: str, rows: Rows, actor: Actor, query: ImageQuery) -> tuple[str, dict[str, Any]]:
    """The listing's SQL and parameters: rows of `VIEW_COLUMNS` and `TIMESTAMP_COLUMNS`, sorted, one page."""
    if query.sort not in SORTABLE:
        raise Invalid(
            "sort {query_sort} is unknown; choose one of {choices}", query_sort=query.sort, choices=", ".join(SORTABLE)
        )
    params: dict[str, Any] = {}
    where = _where(rows, actor, query, params, dialect)
    columns = [*VIEW_COLUMNS, *(stamped(dialect, c) for c in TIMESTAMP_COLUMNS)]
    if dialect == "postgresql":
        params["stamp_format"] = _STAMP_FORMAT
    direction = "DESC" if query.descending else "ASC"
    sql = f"SELECT {', '.join(columns)} {where} ORDER BY {SORTABLE[query.sort]} {direction}, image.id {direction}"
    if query.limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = query.limit
    if query.offset:
        sql += " OFFSET :offset" if query.limit is not None or dialect != "sqlite" else " LIMIT -1 OFFSET :offset"
        params["offset"] = query.offset
    return sql, params


def count_sql(rows: Rows, actor: Actor, query: ImageQuery) -> tuple[str, dict[str, Any]]:
    """How many images the listing has, all pages together."""
    params: dict[str, Any] = {}
    return f"SELECT count(*) FROM (SELECT image.id {_where(rows, actor, query, params)}) AS listed", params


def read_views(reader: SqliteReader, actor: Actor, query: ImageQuery) -> Iterator[dict[str, Any]]:
    """The views of the images `actor` may see, read through sqlite3 (a refused query raises at the first `next`)."""
    sql, params = listing_sql(reader.dialect, reader.rows, actor, query)
    for batch in reader.batches(sql, params, BATCH):
        yield from map(row_view, batch)
