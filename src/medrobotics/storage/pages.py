"""Pages of rows: one statement per page, the one place list pages are read.

Each page's statement is built and compiled once per shape (which filters are given), with
the filter values as bound parameters: building and compiling the SQL cost as much as running
it. Patient fields are left out in SQL when the caller may not see them, and a page that
reports how many rows match in all reads that count in the same statement.

On SQLite the rows come back typed (SQLAlchemy's types) and the service writes their JSON
(web.dumps). On PostgreSQL the same statement's rows are written as one JSON array by
`json_agg`, beside the next page's key and the ids whose patient fields are shown, and the
service embeds that text untouched (an `orjson.Fragment`): loading 100 rows of typed values
into Python and writing them again cost the service about twice the CPU of the rest of the
request (docs/design.md, The read path). Both write the same JSON: times in UTC with an
explicit offset and the fraction without trailing zeros, floats in their shortest exact form.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
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

from medrobotics.storage.db import driver_row

TOTAL = "page_total"
"""The column carrying how many rows match in all, on pages that report it."""


@dataclass(frozen=True, slots=True)
class Rows:
    """One page of rows."""

    items: list[dict[str, Any]] | orjson.Fragment
    """The rows, in order, without the omitted columns: dicts, or their JSON array."""
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
        page = {"page_end": self.limit, "page_rows": self.limit + 1, "page_skip": self.offset}
        return {**self.params, **page}


@dataclass(frozen=True, slots=True)
class _Statement:
    stmt: Select[Any]
    sql: str | None
    """PostgreSQL: the page as JSON (see `_json`), compiled once, run as driver SQL."""
    count: Select[Any]
    """How many rows match in all (read alone only when the page itself is empty)."""


_statements: dict[tuple[str, Shape], _Statement] = {}


def fetch(conn: Connection, query: Query) -> Rows:
    """Read one page (either database)."""
    shape, limit = query.shape, query.limit
    stmt = _statement(conn, query)
    if stmt.sql is not None:
        return _from_json(driver_row(conn, stmt.sql, query.values()), query)
    # fetchall: iterating the result fetches row by row, which cost more than the query.
    result = conn.execute(stmt.stmt, query.values())
    names = tuple(result.keys())
    rows = [dict(zip(names, r, strict=True)) for r in result.all()]
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
    page = stmt.with_only_columns(*shown).order_by(*shape.order())
    page = page.limit(bindparam("page_rows")).offset(bindparam("page_skip"))
    if conn.dialect.name == "postgresql":
        sql = _json(page, shape, count).compile(dialect=conn.dialect).string
        return _Statement(page, sql, count)
    if shape.total:
        # An uncorrelated scalar subquery: evaluated once per statement.
        page = page.add_columns(count.scalar_subquery().label(TOTAL))
    return _Statement(page, None, count)


def _json(page: Select[Any], shape: Shape, count: Select[Any]) -> Select[Any]:
    # The page plus one row (to tell whether more follow) as one JSON array, the row count,
    # the key of the page's last row, which rows carry flagged fields, and the total. Every
    # aggregate reads the ordered subquery's rows in the same order; the array keeps it.
    r = page.subquery("r")
    end = bindparam("page_end", type_=Integer)
    array = func.coalesce(func.json_agg(r.table_valued()), literal_column("'[]'::json"))
    cols: list[Any] = [array.cast(Text), func.count()]
    cols += [func.array_agg(r.c[k])[end] for k in shape.keys]
    if shape.flag:
        any_set = or_(*[r.c[f].is_not(None) for f in shape.flag])
        cols.append(func.array_agg(case((any_set, r.c[shape.ident]))))
    if shape.total:
        cols.append(count.scalar_subquery())
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
    flagged: list[str] = []
    if shape.flag:
        flagged = [i for i in (row[rest] or [])[:limit] if i is not None]
        rest += 1
    total = int(row[rest]) if shape.total else None
    return Rows(orjson.Fragment(text), more, last, flagged, total)
