"""Keyset pagination over (start_time, id), newest first: every page costs one index range."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, tuple_

from medrobotics.storage import pages
from medrobotics.storage.pages import Query, Rows
from medrobotics.storage.tables import UtcDateTime, procedures

Key = tuple[datetime, str]
"""The position after which the next page starts: the last row's (start_time, id)."""

KEY = ("start_time", "procedure_id")
"""The columns of a key, as the pages of procedures and outcomes name them."""


def newest_first(
    name: str,
    listing: Callable[[tuple[str, ...]], Select[Any]],
    given: Mapping[str, Any],
    *,
    after: Key | None,
    limit: int,
    phi: bool,
    phi_fields: tuple[str, ...],
) -> Query:
    """Return a page of `listing` by procedure start, newest first from `after`, to read.

    `listing` builds the select for the names of the filters given (bound by those names);
    None values are filters not given. Without `phi` the `phi_fields` are left out; with it,
    the rows that show them are flagged for the audit.
    """
    params = {k: v for k, v in given.items() if v is not None}
    names = tuple(params)
    if after is not None:
        params["after_time"], params["after_id"] = after

    def build() -> Select[Any]:
        stmt = listing(names)
        if after is None:
            return stmt
        return stmt.where(after_key(procedures.c.start_time, procedures.c.procedure_id))

    shape = pages.Shape(
        name=(name, names, after is not None),
        order=_newest_first,
        omit=frozenset() if phi else frozenset(phi_fields),
        keys=KEY,
        ident="procedure_id",
        flag=phi_fields if phi else (),
    )
    return Query(build, shape, params, limit)


def _newest_first() -> list[Any]:
    return [procedures.c.start_time.desc(), procedures.c.procedure_id.desc()]


def after_key(time: ColumnElement[Any], ident: ColumnElement[Any]) -> ColumnElement[bool]:
    """Return 'comes after the parameters `after_time`, `after_id` in newest-first order'."""
    # A row-value comparison, so PostgreSQL and SQLite both walk the (time, id) index from it.
    position = tuple_(bindparam("after_time", type_=UtcDateTime), bindparam("after_id"))
    return tuple_(time, ident) < position


def next_key(rows: Rows) -> Key | None:
    """Return where the next page starts: the page's last (time, id), or None at the end."""
    if not rows.more or rows.last is None:
        return None
    return rows.last[KEY[0]], rows.last[KEY[1]]
