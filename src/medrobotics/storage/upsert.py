"""Idempotent writes shared by every entity: insert, or update the fields a client sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table, key: str, items: Sequence[BaseModel]) -> int:
    """Write `items` keyed by `key`; a re-sent key updates only the fields it carries.

    Later items win over earlier ones with the same key. Returns how many were written.
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
    for sent, rows in groups.items():
        # In key order, so concurrent writers take row locks in one order and never deadlock.
        rows.sort(key=lambda r: r[key])
        stmt = dialect.insert(table)
        changes = {name: stmt.excluded[name] for name in sorted(sent - {key})}
        changes["updated_at"] = stmt.excluded.updated_at
        conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=changes), rows)
    return len(latest)
