"""Pages of rows: one statement per page, read as typed rows on either database.

Each page's statement is built and compiled once per shape (which filters are given), with
the filter values as bound parameters: building and compiling the SQL cost as much as running
it. Patient fields are left out in SQL when the caller may not see them, and a page that
reports how many rows match in all reads that count in the same statement. The service turns
the rows into the answer's JSON (api.params, web.ORJSONResponse): no JSON is built or stored
by the database.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, bindparam, func, select

from medrobotics.storage.db import reading

TOTAL = "page_total"
"""The column carrying how many rows match in all, on pages that report it."""


@dataclass(frozen=True, slots=True)
class Rows:
    """One page of rows."""

    items: list[dict[str, Any]]
    """The rows, in order, by column name, without the omitted columns."""
    more: bool
    """Whether a row follows the page."""
    last: dict[str, Any] | None
    """The `keys` columns of the page's last row when more follow (the next page's start)."""
    flagged: list[str]
    """The `ident` of each row with any `flag` column set (whose patient data is shown)."""
    total: int | None = None
    """How many rows match in all, when the shape asks for it."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What a page statement depends on besides its parameter values."""

    name: Hashable
    """The caller's key for the filters given (one statement per combination)."""
    order: Callable[[], Sequence[ColumnElement[Any]]]
    omit: frozenset[str] = frozenset()
    keys: tuple[str, ...] = ()
    ident: str = ""
    flag: tuple[str, ...] = ()
    total: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A page to read: the filtered select, its shape and the values of its parameters."""

    build: Callable[[], Select[Any]] = field(compare=False)
    """Returns the filtered select with `bindparam`s named as in `params`; called once."""
    shape: Shape
    params: Mapping[str, Any]
    limit: int
    offset: int = 0

    def values(self) -> dict[str, Any]:
        """Return every parameter of the page's statement."""
        return {**self.params, "page_rows": self.limit + 1, "page_skip": self.offset}


@dataclass(frozen=True, slots=True)
class _Statement:
    stmt: Select[Any]
    sql: str | None
    """PostgreSQL: the statement's text for psycopg, run without SQLAlchemy's result types."""
    count: Select[Any]
    """How many rows match in all (read alone only when the page itself is empty)."""


_statements: dict[tuple[str, Shape], _Statement] = {}


def read(engine: Engine, query: Query) -> Rows:
    """Read one page in its own unit of work; an outage surfaces as Unavailable."""
    with reading(engine) as conn:
        return fetch(conn, query)


def fetch(conn: Connection, query: Query) -> Rows:
    """Read one page (either database)."""
    shape, limit = query.shape, query.limit
    stmt = _statement(conn, query)
    if stmt.sql is not None:
        # psycopg's own loaders already give aware UTC datetimes (the session's zone is UTC),
        # dates and floats; SQLAlchemy's per-value result processing would only redo them.
        result = conn.exec_driver_sql(stmt.sql, query.values())
    else:
        result = conn.execute(stmt.stmt, query.values())
    names = tuple(result.keys())
    rows = [dict(zip(names, r, strict=True)) for r in result]
    more = len(rows) > limit
    del rows[limit:]
    total = None
    if shape.total:
        if rows:
            total = int(rows[0][TOTAL])
            for r in rows:
                del r[TOTAL]
        else:  # past the end (or nothing matches): the count alone
            total = int(conn.execute(stmt.count, dict(query.params)).scalar_one())
    flagged = [r[shape.ident] for r in rows if any(r[f] is not None for f in shape.flag)]
    last = {k: rows[-1][k] for k in shape.keys} if more else None
    return Rows(rows, more, last, flagged, total)


def _statement(conn: Connection, query: Query) -> _Statement:
    key = (conn.dialect.name, query.shape)
    found = _statements.get(key)
    if found is None:
        found = _statements[key] = _build(conn, query)
    return found


def _build(conn: Connection, query: Query) -> _Statement:
    shape = query.shape
    stmt = query.build()
    count = select(func.count()).select_from(stmt.subquery())
    shown = [c for c in stmt.selected_columns if c.key not in shape.omit]
    page = stmt.with_only_columns(*shown)
    if shape.total:
        # An uncompiled scalar subquery: both databases evaluate it once per statement.
        page = page.add_columns(count.scalar_subquery().label(TOTAL))
    page = page.order_by(*shape.order()).limit(bindparam("page_rows"))
    page = page.offset(bindparam("page_skip"))
    sql = None
    if conn.dialect.name == "postgresql":
        sql = page.compile(dialect=conn.dialect).string
    return _Statement(page, sql, count)
