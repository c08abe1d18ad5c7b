"""Raw batch payloads kept until the archiver has copied them to the lake."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from isal import isal_zlib
from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from medrobotics.storage.tables import batches

# Plain gzip, written by ISA-L (isal): a quarter of zlib level 1's CPU for a smaller file, on
# the request path of every batch. Level 1 of ISA-L's 0-3.
GZIP_LEVEL = 1
_GZIP = 31  # window bits that select the gzip format


@dataclass(frozen=True)
class Payload:
    """One accepted batch's raw body, ready to store."""

    batch_id: str
    entity: str
    record_count: int
    gzipped: bytes | None


def hasher(entity: str) -> Any:
    """Start the content hash of a batch of `entity` (feed it the body)."""
    return hashlib.sha256(entity.encode() + b"\n")


def packer() -> Any:
    """Start a gzip stream for a batch's body (`compress` its pieces, then `flush`)."""
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, _GZIP)


def payload(
    *, entity: str, body: bytes | None, record_count: int, digest: str | None = None
) -> Payload:
    """Build the stored form of a batch: content-derived id and the gzipped body.

    `body` None keeps the id and count without the payload (`digest` must then be given).
    """
    if digest is None:
        if body is None:
            raise ValueError("a payload without a body needs its digest")
        h = hasher(entity)
        h.update(body)
        digest = h.hexdigest()
    gz = None if body is None else isal_zlib.compress(body, GZIP_LEVEL, wbits=_GZIP)
    return Payload(digest, entity, record_count, gz)


def record(conn: Connection, *, item: Payload, received_at: datetime) -> None:
    """Store a batch in the caller's transaction; an identical re-send keeps the first row."""
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(batches).values(
        batch_id=item.batch_id,
        entity=item.entity,
        record_count=item.record_count,
        received_at=received_at,
        payload=item.gzipped,
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["batch_id"]))


def pending(conn: Connection, *, limit: int) -> list[Any]:
    """Return the oldest unarchived batches (id, entity, received_at, payload)."""
    stmt = (
        select(batches.c.batch_id, batches.c.entity, batches.c.received_at, batches.c.payload)
        .where(batches.c.archived_at.is_(None))
        .order_by(batches.c.received_at, batches.c.batch_id)
        .limit(limit)
    )
    return list(conn.execute(stmt))


def mark_archived(conn: Connection, *, batch_ids: Sequence[str], at: datetime) -> int:
    """Record that these batches are in the lake."""
    if not batch_ids:
        return 0
    stmt = (
        update(batches)
        .where(batches.c.batch_id.in_(batch_ids), batches.c.archived_at.is_(None))
        .values(archived_at=at)
    )
    return conn.execute(stmt).rowcount


def count_pending(conn: Connection) -> int:
    """Return how many batches wait for the lake."""
    stmt = select(func.count()).select_from(batches).where(batches.c.archived_at.is_(None))
    return int(conn.execute(stmt).scalar_one())


def prune(conn: Connection, *, before: datetime) -> int:
    """Delete archived batches received before `before` (the lake keeps them)."""
    stmt = delete(batches).where(batches.c.archived_at.is_not(None), batches.c.received_at < before)
    return conn.execute(stmt).rowcount
