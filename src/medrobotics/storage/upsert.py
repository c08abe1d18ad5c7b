"""Idempotent writes shared by every entity: insert, or update the fields a client sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Table, or_
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table, key: str, items: Sequence[BaseModel]) -> int:
    """Write `items` keyed by `key`; a re-sent key updates only the fields it carries.

    Later items win over earlier ones with the same key. Returns how many rows were new or
    changed: a record equal to what is stored (in the fields it carries) is left alone, its
    `updated_at` included, so an identical re-send changes nothing and counts nothing.
    """
    latest: dict[str, BaseModel] = {}
    for item in items:
        latest[getattr(item, key)] = item
    now = datetime.now(UTC)
    # One statement per distinct set of sent fields: executemany needs uniform columns.
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for item in latest.values():
        sent = frozenset(item.model_fields_set | {key})
        row = item.model_dump()
        row["created_at"] = row["updated_at"] = now
        groups.setdefault(sent, []).append(row)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    written = 0
    for sent, rows in groups.items():
        # In key order, so concurrent writers take row locks in one order and never deadlock.
        rows.sort(key=lambda r: r[key])
        stmt = dialect.insert(table)
        changes = {name: stmt.excluded[name] for name in sorted(sent - {key})}
        # IS DISTINCT FROM (SQLite: IS NOT): a NULL sent over a NULL stored is no change. A
        # skipped row is neither updated nor counted, and fires no row trigger (roll-ups, page
        # documents); the statement triggers see it in no transition table.
        differs = or_(*(table.c[name].is_distinct_from(stmt.excluded[name]) for name in changes))
        changes["updated_at"] = stmt.excluded.updated_at
        upsert_ = stmt.on_conflict_do_update(index_elements=[key], set_=changes, where=differs)
        # preserve_rowcount: SQLAlchemy reads an INSERT's rowcount only when asked; over
        # executemany both drivers give the sum of rows inserted or updated.
        result = conn.execute(upsert_.execution_options(preserve_rowcount=True), rows)
        written += result.rowcount
    return written
