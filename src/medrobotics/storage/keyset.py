"""Keyset pagination over (start_time, id), newest first: every page costs one index range."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, tuple_

Key = tuple[datetime, str]
"""The position after which the next page starts: the last row's (start_time, id)."""


def before(time: ColumnElement[Any], ident: ColumnElement[Any], after: Key) -> ColumnElement[bool]:
    """Return the condition 'comes after `after` in newest-first order'."""
    # A row-value comparison, so PostgreSQL and SQLite both walk the (time, id) index from it.
    return tuple_(time, ident) < tuple_(*after)


def split(
    rows: list[dict[str, Any]], limit: int, time: str, ident: str
) -> tuple[list[dict[str, Any]], Key | None]:
    """Cut the extra row fetched to detect a next page; return the page and its next key."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, (rows[-1][time], rows[-1][ident])
