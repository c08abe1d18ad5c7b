"""API key and audit log queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import RowMapping

from medrobotics.storage.tables import api_keys, audit_log


def add(
    conn: Connection,
    *,
    key_id: str,
    name: str,
    salt: str,
    secret_hash: str,
    scopes: Sequence[str],
    created_at: datetime,
    expires_at: datetime | None,
) -> None:
    """Store a new key's hash (never the key)."""
    conn.execute(
        insert(api_keys).values(
            key_id=key_id,
            name=name,
            salt=salt,
            secret_hash=secret_hash,
            scopes=list(scopes),
            created_at=created_at,
            expires_at=expires_at,
        )
    )


def get(conn: Connection, *, key_id: str) -> RowMapping | None:
    """Return one key's stored record."""
    return conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()


def list_all(conn: Connection) -> list[RowMapping]:
    """Return every key's record, newest first."""
    stmt = select(api_keys).order_by(api_keys.c.created_at.desc())
    return list(conn.execute(stmt).mappings())


def set_time(conn: Connection, *, key_id: str, column: str, at: datetime) -> bool:
    """Set `revoked_at` or `expires_at`; return whether the key exists."""
    stmt = update(api_keys).where(api_keys.c.key_id == key_id).values({column: at})
    return conn.execute(stmt).rowcount == 1


def audit(conn: Connection, *, entries: Sequence[dict[str, Any]]) -> None:
    """Append audit entries."""
    if entries:
        conn.execute(insert(audit_log), list(entries))


def audit_entries(conn: Connection, *, limit: int = 100) -> list[RowMapping]:
    """Return the newest audit entries."""
    stmt = select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit)
    return list(conn.execute(stmt).mappings())
