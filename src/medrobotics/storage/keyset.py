"""Keyset pagination over (start_time, id), newest first: every page costs one index range."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, tuple_

from medrobotics.storage.pages import Rows
from medrobotics.storage.tables import UtcDateTime

Key = tuple[datetime, str]
"""The position after which the next page starts: the last row's (start_time, id)."""


def after_key(time: ColumnElement[Any], ident: ColumnElement[Any]) -> ColumnElement[bool]:
    """Return 'comes after the parameters `after_time`, `after_id` in newest-first order'."""
    # A row-value comparison, so PostgreSQL and SQLite both walk the (time, id) index from it.
    position = tuple_(bindparam("after_time", type_=UtcDateTime), bindparam("after_id"))
    return tuple_(time, ident) < position


def next_key(rows: Rows, names: tuple[str, str]) -> Key | None:
    """Return where the next page starts: the page's last (time, id), or None at the end."""
    if not rows.more or rows.last is None:
        return None
    return rows.last[names[0]], rows.last[names[1]]
