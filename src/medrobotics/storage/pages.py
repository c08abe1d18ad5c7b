"""Pages of rows ready for the answer: JSON built by PostgreSQL, or dicts on SQLite.

A 100-row page cost about 3 ms of Python per request when every row became a dict, every
timestamp a datetime, and then JSON again. On PostgreSQL the database builds the page's JSON
(`json_agg`) in the same statement that reads it, and the service embeds that text in the
answer untouched (an `orjson.Fragment`): the per-row work runs in C, in the database process.
Each page's statement is built and compiled once per shape (which filters are given), with
the filter values as bound parameters: building the SQL cost as much as running it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg


@dataclass(frozen=True, slots=True)
class Rows:
    """One page of rows."""

    items: list[dict[str, Any]] | orjson.Fragment
    """The rows, in order, without the omitted columns: ready for orjson."""
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
    doc: Callable[[], ColumnElement[str]] | None = None
    """On PostgreSQL, each row's JSON as stored beside it (0006, 0007); None: built here."""


def stored_json(column: str) -> Callable[[], ColumnElement[str]]:
    """Return a `Shape.doc`: the page JSON a trigger keeps in `column` ("table.column")."""
    return lambda: literal_column(column, Text)


@dataclass(frozen=True, slots=True)
class Query:
    """A page to read: the filtered select, its shape and the values of its parameters."""

    build: Callable[[], Select[Any]] = field(compare=False)
    """Returns the filtered select with `bindparam`s named as in `params`; called once."""
    shape: Shape
    params: Mapping[str, Any]
    limit: int
    offset: int = 0
    stored: Callable[[], Select[Any]] | None = field(default=None, compare=False)
    """On PostgreSQL with `shape.doc`: the select to read the documents from (else `build`)."""

    def values(self) -> dict[str, Any]:
        """Return every parameter of the page's statement."""
        page = {"page_end": self.limit, "page_rows": self.limit + 1, "page_skip": self.offset}
        return {**self.params, **page}


_POSTGRES = PGDialect_psycopg()
_sql: dict[Shape, str] = {}
_statements: dict[Select[Any], str] = {}
_plain_stmts: dict[Shape, tuple[Select[Any], Select[Any] | None]] = {}


def fetch(conn: Connection, query: Query) -> Rows:
    """Read one page on a synchronous connection (either database)."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        row = raw.execute(_postgres_sql(query), query.values()).fetchone()  # type: ignore[union-attr]
        return _from_json(row, query)
    shape = query.shape
    if shape not in _plain_stmts:
        stmt = query.build()
        count = select(func.count()).select_from(stmt.subquery()) if shape.total else None
        _plain_stmts[shape] = (_plain(stmt, shape), count)
    stmt, count = _plain_stmts[shape]
    rows = [dict(r) for r in conn.execute(stmt, query.values()).mappings()]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    flagged = [r[shape.ident] for r in rows if any(r.get(f) is not None for f in shape.flag)]
    items = [{k: v for k, v in r.items() if k not in shape.omit} for r in rows]
    last = {k: rows[-1][k] for k in shape.keys} if more else None
    total = int(conn.execute(count, dict(query.params)).scalar_one()) if count is not None else None
    return Rows(items, more, last, flagged, total)


async def fetch_async(conn: AsyncConnection[Any], query: Query) -> Rows:
    """Read one page on an asynchronous PostgreSQL connection."""
    cur = await conn.execute(_postgres_sql(query), query.values())
    return _from_json(await cur.fetchone(), query)


def _postgres_sql(query: Query) -> str:
    sql = _sql.get(query.shape)
    if sql is None:
        # A page built by json_agg (no `doc`) reads the full listing, not the documents'.
        build = query.stored if query.shape.doc is not None and query.stored else query.build
        sql = _sql[query.shape] = postgres_sql(_json(build(), query.shape))
    return sql


def postgres_sql(stmt: Select[Any]) -> str:
    """Return the SQL text of a statement for psycopg (cached per statement object)."""
    sql = _statements.get(stmt)
    if sql is None:
        sql = _statements[stmt] = stmt.compile(dialect=_POSTGRES).string
    return sql


def _plain(stmt: Select[Any], shape: Shape) -> Select[Any]:
    page = stmt.order_by(*shape.order()).limit(bindparam("page_rows"))
    return page.offset(bindparam("page_skip"))


def _json(stmt: Select[Any], shape: Shape) -> Select[Any]:
    # The page plus one row (to tell whether more follow) as one JSON array, the row count,
    # the key of the page's last row, and which rows carry flagged fields. Every aggregate
    # reads the ordered subquery's rows in the same order; the array keeps it.
    end = bindparam("page_end", type_=Integer)
    if shape.doc is not None:
        r = _plain(stmt.add_columns(shape.doc().label("page_doc")), shape).subquery("r")
        # Separated as json_agg separates elements (_from_json cuts the extra row there).
        docs = func.string_agg(r.c.page_doc, literal_column("E', \\n '"))
        empty: Any = literal_column("''")
        close: Any = literal_column("']'")
        array: Any = literal_column("'['").op("||")(func.coalesce(docs, empty)).op("||")(close)
    else:
        full = _plain(stmt, shape).subquery("full")
        r = select(*[c for c in full.c if c.key not in shape.omit]).subquery("r")
        array = func.coalesce(func.json_agg(r.table_valued()), literal_column("'[]'::json"))
    cols: list[Any] = [array.cast(Text), func.count()]
    cols += [func.array_agg(r.c[k])[end] for k in shape.keys]
    if shape.flag:
        any_set = or_(*[r.c[f].is_not(None) for f in shape.flag])
        cols.append(func.array_agg(case((any_set, r.c[shape.ident]))))
    if shape.total:
        cols.append(select(func.count()).select_from(stmt.subquery()).scalar_subquery())
    return select(*cols)


def _from_json(row: Any, query: Query) -> Rows:
    shape, limit = query.shape, query.limit
    text: str = row[0]
    more = int(row[1]) > limit
    if more:
        # Drop the extra row: json_agg separates elements with ", \n " and a newline never
        # occurs inside an element (JSON escapes it in strings).
        text = text[: text.rindex(", \n ")] + "]"
    k = len(shape.keys)
    last = dict(zip(shape.keys, row[2 : 2 + k], strict=True)) if more else None
    rest = 2 + k
    flagged = []
    if shape.flag:
        flagged = [i for i in (row[rest] or [])[:limit] if i is not None]
        rest += 1
    total = int(row[rest]) if shape.total else None
    return Rows(orjson.Fragment(text), more, last, flagged, total)
