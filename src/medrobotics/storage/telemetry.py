"""Telemetry queries: the bulk write path and per-procedure reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Connection, Integer, cast, func, literal, select
from sqlalchemy.dialects import sqlite

from medrobotics.domain.telemetry import COLUMNS, READINGS, bucket_count, bucket_interval
from medrobotics.domain.units import READING, rounded
from medrobotics.errors import InvalidInput
from medrobotics.storage.tables import telemetry

Row = Sequence[Any]
"""One sample's values in `COLUMNS` order."""

_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_STAGE = (
    # Session-local, unindexed, unlogged by nature: COPY lands here at full speed, then one
    # INSERT .. ON CONFLICT DO NOTHING moves it, which is what makes re-sends idempotent.
    # Asked for each time, never remembered per connection: a temp table made in a transaction
    # that rolls back is gone with it, and a note on the pooled connection would outlive it.
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_stage "
    "(LIKE telemetry INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS; "
    # A second write in one transaction must not see the first one's rows.
    "DELETE FROM telemetry_stage"
)
_COPY_DIRECT = f"COPY telemetry ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY = f"COPY telemetry_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
# Column names are this module's constants, never input. received_at is the transaction's
# start time on both paths (the column default), which the archiver's watermark relies on.
_MOVE = (
    f"INSERT INTO telemetry ({_COLS}) "  # noqa: S608  # nosec B608
    f"SELECT {_COLS} FROM telemetry_stage ON CONFLICT DO NOTHING"
)
_TYPES = ["text", "text", "timestamptz"] + [
    "text" if c == "tool_type" else "float8" for c in COLUMNS[3:]
]


def insert_many(conn: Connection, *, rows: Sequence[Row]) -> int:
    """Write samples on the bulk path; duplicates of stored samples are skipped.

    Returns how many were new. A month without a partition lands in the DEFAULT one.
    """
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        now = datetime.now(UTC)
        stmt = sqlite.insert(telemetry).on_conflict_do_nothing()
        params = [dict(zip(COLUMNS, r, strict=True), received_at=now) for r in rows]
        return conn.execute(stmt, params).rowcount
    raw = conn.connection.driver_connection
    # Optimistic: COPY straight into the table, which is as fast as PostgreSQL takes rows. A
    # duplicate key (a re-send, or a concurrent one) fails that COPY; then the rows go the
    # idempotent way: COPY to a staging table and INSERT .. ON CONFLICT DO NOTHING, which
    # costs about twice as much and so is kept for the rare case.
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute("SAVEPOINT telemetry_copy")
        try:
            _copy(cur, _COPY_DIRECT, rows)
        except psycopg.errors.UniqueViolation:
            # One round trip: statements without parameters go as one simple query.
            cur.execute(f"ROLLBACK TO SAVEPOINT telemetry_copy; {_STAGE}")
        else:
            cur.execute("RELEASE SAVEPOINT telemetry_copy")
            return len(rows)
        _copy(cur, _COPY, rows)
        cur.execute(_MOVE)
        return int(cur.rowcount)


def _copy(cur: Any, statement: str, rows: Sequence[Row]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(_TYPES)
        for row in rows:
            copy.write_row(row)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def summarize(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shape a procedure's `telemetry_summary` row (None: no samples) as its summary.

    The database keeps that row on every insert (migration 0004), so a procedure's summary
    is one key lookup however many samples it has, including samples since moved to the lake.
    """
    row = row or {}
    channels = {}
    for name in READINGS:
        count, total = int(row.get(f"{name}_count", 0)), row.get(f"{name}_sum")
        channels[name] = {
            "count": count,
            "min": _num(row.get(f"{name}_min")),
            "mean": rounded(total / count, READING) if count and total is not None else None,
            "max": _num(row.get(f"{name}_max")),
        }
    return {
        "sample_count": int(row.get("sample_count", 0)),
        "first_timestamp": row.get("first_timestamp"),
        "last_timestamp": row.get("last_timestamp"),
        "channels": channels,
    }


def series(
    conn: Connection,
    *,
    procedure_id: str,
    channels: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    interval_ms: int | None = None,
    max_points: int,
) -> dict[str, Any]:
    """Return the mean of each channel per `interval_ms` bucket, at most `max_points` buckets.

    Without `interval_ms` the narrowest width that fits `max_points` is chosen; with one that
    would give more buckets, InvalidInput names `interval_ms`.
    """
    t = telemetry.c
    conds = [t.procedure_id == procedure_id]
    if start is not None:
        conds.append(t.timestamp >= start)
    if end is not None:
        conds.append(t.timestamp < end)
    bounds = select(func.min(t.timestamp), func.max(t.timestamp)).where(*conds)
    first, last = conn.execute(bounds).one()
    out: dict[str, Any] = {
        "procedure_id": procedure_id,
        "start": start,
        "end": end,
        "channels": list(channels),
        "time": [],
        "samples": [],
        "values": {name: [] for name in channels},
    }
    if first is None:
        out["interval_ms"] = interval_ms or 1000
        return out
    first_ms, last_ms = (first - EPOCH) // _MS, (last - EPOCH) // _MS
    if interval_ms is None:
        interval_ms = bucket_interval(first_ms, last_ms, max_points=max_points)
    elif bucket_count(first_ms, last_ms, interval_ms) > max_points:
        least = bucket_interval(first_ms, last_ms, max_points=max_points)
        raise InvalidInput(
            "invalid parameter: interval_ms",
            details=[
                {
                    "field": "interval_ms",
                    "message": f"gives more than {max_points} points for this range; "
                    f"use at least {least} or a narrower time range",
                }
            ],
        )
    out["interval_ms"] = interval_ms
    ms = _epoch_ms(conn, t.timestamp)
    # Widths reach past 2**31 ms (the route takes up to a year): bound as a 64-bit integer.
    width = literal(interval_ms, BigInteger)
    if conn.dialect.name == "postgresql":
        bucket = cast(func.floor(ms / width), BigInteger).label("bucket")
    else:
        bucket = (ms // width).label("bucket")  # integers: SQLite divides exactly
    stmt = (
        select(bucket, func.count(), *(func.avg(t[name]) for name in channels))
        .where(*conds)
        .group_by(bucket)
        .order_by(bucket)
    )
    for row in conn.execute(stmt):
        out["time"].append(EPOCH + int(row[0]) * interval_ms * _MS)
        out["samples"].append(int(row[1]))
        for name, value in zip(channels, row[2:], strict=True):
            out["values"][name].append(rounded(_num(value), READING))
    return out


def _epoch_ms(conn: Connection, column: Any) -> Any:
    """Milliseconds since the epoch, computed exactly (no float rounding at bucket edges)."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", column) * 1000
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff': whole seconds, then the milliseconds digits.
    seconds = cast(func.strftime("%s", column), Integer)
    millis = cast(func.substr(func.strftime("%f", column), 4), Integer)
    return seconds * 1000 + millis


def _num(value: Any) -> float | None:
    return float(value) if value is not None else None
