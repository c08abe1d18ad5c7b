"""Monthly telemetry partitions (PostgreSQL): made ahead of time, retired by retention.

A request never creates a table. Rows of a month without a partition of its own land in the
DEFAULT partition (migration 0008), so whatever timestamps a client sends, the number of
tables is set by this module alone: the months from the current one to `ahead` months after
it, kept by the archiver on every pass, by `medrobotics db upgrade` and by
`medrobotics db partitions`; retention drops the old ones once the lake holds their rows.

A month is made as a table of its own, filled with that month's rows from the DEFAULT
partition (normally none), then attached: a plain `CREATE TABLE .. PARTITION OF` fails as
soon as the DEFAULT partition holds a row of the month, and would lock the parent table for
writes. On SQLite there are no partitions and every function here does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg.errors import LockNotAvailable, QueryCanceled
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import OperationalError

from medrobotics import logs
from medrobotics.errors import Unavailable
from medrobotics.storage.db import is_postgres, reading, transaction
from medrobotics.storage.tables import archive_marks

log = logs.get("medrobotics.partitions")

DEFAULT = "telemetry_default"
NAME = re.compile(r"^telemetry_y(\d{4})m(\d{2})$")
# Transaction advisory lock id ("mrpart"): one maintainer changes partitions at a time.
LOCK_ID = 0x6D7270617274
# Partition DDL waits at most this long for a lock: ingestion queues behind a waiting
# exclusive lock, so a maintainer that cannot get one gives up and tries on its next pass.
LOCK_TIMEOUT = "5s"
DELETE_SLICE = 50_000  # rows of the DEFAULT partition retention deletes per transaction

Month = tuple[int, int]


@dataclass
class Changes:
    """What one maintenance pass did to the partitions."""

    created: list[str]
    dropped: list[str]
    rows_deleted: int = 0


def name(month: Month) -> str:
    """Return the partition table's name for a (year, month)."""
    return f"telemetry_y{month[0]:04d}m{month[1]:02d}"


def bounds(month: Month) -> tuple[datetime, datetime]:
    """Return the month's range `[first instant, first instant of the next month)`, UTC."""
    year, mon = month
    after = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return datetime(year, mon, 1, tzinfo=UTC), datetime(*after, 1, tzinfo=UTC)


def months_from(now: datetime, ahead: int) -> list[Month]:
    """Return the month of `now` (UTC) and the `ahead` months after it."""
    now = now.astimezone(UTC)
    out = []
    year, mon = now.year, now.month
    for _ in range(ahead + 1):
        out.append((year, mon))
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


def existing(conn: Connection) -> dict[Month, str]:
    """Return the monthly partitions that exist, by month (the DEFAULT one left out)."""
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry'::regclass"
        )
    ).scalars()
    return {(int(m[1]), int(m[2])): n for n in names if (m := NAME.match(n))}


def ensure(engine: Engine, *, months: Iterable[Month]) -> list[str]:
    """Create the partitions of `months` that are missing; return the names created.

    Each month in a short transaction of its own. A month whose locks are not granted in time
    is skipped (and logged): its rows meanwhile land in, and stay readable from, the DEFAULT
    partition.
    """
    if not is_postgres(engine):
        return []
    with reading(engine) as conn:
        have = existing(conn)
    created = []
    for month in sorted(set(months) - set(have)):
        try:
            with engine.begin() as conn:
                if _create(conn, month):
                    created.append(name(month))
        except OperationalError as exc:
            if not isinstance(exc.orig, LockNotAvailable | QueryCanceled):
                raise Unavailable("database unavailable") from exc
            log.warning("partition_skipped", partition=name(month), error=type(exc.orig).__name__)
    return created


def _create(conn: Connection, month: Month) -> bool:
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
    if month in existing(conn):
        return False  # another maintainer made it meanwhile
    table = name(month)
    lo, hi = bounds(month)
    # Names and bounds come from integers, never from input.
    conn.execute(
        text(f"CREATE TABLE {table} (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    # Locked before its rows are read, so no sample of the month can arrive between the copy
    # and the delete; ATTACH needs this lock on the DEFAULT partition anyway. Rows move
    # partition to partition, below the parent's triggers (the telemetry summary already
    # counts them).
    conn.execute(text(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE"))
    in_month = 'WHERE "timestamp" >= :lo AND "timestamp" < :hi'
    moved = conn.execute(
        text(f"INSERT INTO {table} SELECT * FROM {DEFAULT} {in_month}"),  # noqa: S608  # nosec B608
        {"lo": lo, "hi": hi},
    ).rowcount
    if moved:
        conn.execute(text(f"DELETE FROM {DEFAULT} {in_month}"), {"lo": lo, "hi": hi})  # noqa: S608  # nosec B608
    conn.execute(
        text(
            f"ALTER TABLE telemetry ATTACH PARTITION {table} "
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
        )
    )
    log.info("partition_created", partition=table, rows_moved=moved)
    return True


def retire(engine: Engine, *, before: datetime) -> Changes:
    """Drop monthly partitions wholly older than `before`, and delete such rows from the
    DEFAULT partition, where the lake already holds every row (PostgreSQL only)."""
    changes = Changes(created=[], dropped=[])
    if not is_postgres(engine):
        return changes
    with reading(engine) as conn:
        candidates = [n for m, n in sorted(existing(conn).items()) if bounds(m)[1] <= before]
    for table in candidates:
        with transaction(engine) as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            # Locked first so no late sample can slip in between the check and the drop.
            conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            mark = _mark(conn)
            unarchived = (
                mark is None
                or conn.execute(
                    # The partition name comes from pg_inherits, never from input.
                    text(f"SELECT 1 FROM {table} WHERE received_at >= :mark LIMIT 1"),  # noqa: S608  # nosec B608
                    {"mark": mark},
                ).first()
            )
            if unarchived:
                continue
            conn.execute(text(f"DROP TABLE {table}"))
            changes.dropped.append(table)
            log.info("partition_dropped", partition=table)
    while True:
        # In slices, each its own transaction: a large backfill in the DEFAULT partition is
        # deleted within the statement timeout, and the lock on its rows stays short.
        with transaction(engine) as conn:
            mark = _mark(conn)
            if mark is None:
                break
            deleted = conn.execute(
                text(
                    f"DELETE FROM {DEFAULT} WHERE ctid IN (SELECT ctid FROM {DEFAULT} "  # noqa: S608  # nosec B608
                    'WHERE "timestamp" < :before AND received_at < :mark LIMIT :n)'
                ),
                {"before": before, "mark": mark, "n": DELETE_SLICE},
            ).rowcount
        changes.rows_deleted += deleted
        if deleted < DELETE_SLICE:
            break
    return changes


def _mark(conn: Connection) -> datetime | None:
    # The archiver's watermark: every row received before it is in the lake.
    stream = archive_marks.c.stream == "telemetry"
    return conn.execute(select(archive_marks.c.mark).where(stream)).scalar()


def maintain(
    engine: Engine,
    *,
    ahead: int,
    retention_days: int | None = None,
    now: datetime | None = None,
) -> Changes:
    """Make the months from now to `ahead` months on; with retention, retire the old ones."""
    now = now or datetime.now(UTC)
    created = ensure(engine, months=months_from(now, ahead))
    changes = Changes(created=created, dropped=[])
    if retention_days:
        retired = retire(engine, before=now - timedelta(days=retention_days))
        changes.dropped, changes.rows_deleted = retired.dropped, retired.rows_deleted
    return changes
