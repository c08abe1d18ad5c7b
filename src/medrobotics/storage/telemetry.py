"""Telemetry queries: the bulk write path and per-procedure reads."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import sqlite

from medrobotics.domain.telemetry import COLUMNS
from medrobotics.storage.tables import telemetry

Row = Sequence[Any]
"""One sample's values in `COLUMNS` order."""

_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_STAGE_DDL = (
    # Session-local, unindexed, unlogged by nature: COPY lands here at full speed, then one
    # INSERT .. ON CONFLICT DO NOTHING moves it, which is what makes re-sends idempotent.
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_stage "
    "(LIKE telemetry INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY telemetry_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
# Column names are this module's constants, never input.
_MOVE = (
    f"INSERT INTO telemetry ({_COLS}, received_at) "  # noqa: S608
    f"SELECT {_COLS}, %s FROM telemetry_stage ON CONFLICT DO NOTHING"
)
_TYPES = ["text", "text", "timestamptz"] + [
    "text" if c == "tool_type" else "float8" for c in COLUMNS[3:]
]

_known_months: set[tuple[str, int, int]] = set()
_months_lock = threading.Lock()


def insert_many(conn: Connection, *, rows: Sequence[Row]) -> int:
    """Write samples on the bulk path; duplicates of stored samples are skipped.

    Returns how many were new. Partitions must exist (see `ensure_partitions`).
    """
    if not rows:
        return 0
    now = datetime.now(UTC)
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(telemetry).on_conflict_do_nothing()
        params = [dict(zip(COLUMNS, r, strict=True), received_at=now) for r in rows]
        return conn.execute(stmt, params).rowcount
    raw = conn.connection.driver_connection
    info = conn.connection.info
    with raw.cursor() as cur:  # type: ignore[union-attr]
        if not info.get("telemetry_stage"):
            cur.execute(_STAGE_DDL)
            info["telemetry_stage"] = True
        else:
            # A second write in one transaction must not see the first one's rows.
            cur.execute("DELETE FROM telemetry_stage")
        with cur.copy(_COPY) as copy:
            copy.set_types(_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(_MOVE, (now,))
        return int(cur.rowcount)


def months_of(rows: Iterable[Row]) -> set[tuple[int, int]]:
    """Return the (year, month) pairs the samples' timestamps fall in."""
    return {(r[2].year, r[2].month) for r in rows}


def ensure_partitions(engine: Engine, *, months: set[tuple[int, int]]) -> None:
    """Create the monthly telemetry partitions that `months` need (PostgreSQL only).

    Runs in its own short transaction: partition DDL locks the parent table, so it must not
    be held for the length of a data write.
    """
    if engine.dialect.name != "postgresql":
        return
    key = str(engine.url)
    missing = sorted(m for m in months if (key, *m) not in _known_months)
    if not missing:
        return
    with _months_lock, engine.begin() as conn:
        for year, month in missing:
            conn.execute(text(_partition_ddl(year, month)))
            _known_months.add((key, year, month))


def forget_partitions() -> None:
    """Drop the cache of known partitions (after retention removed some)."""
    with _months_lock:
        _known_months.clear()


def _partition_ddl(year: int, month: int) -> str:
    nyear, nmonth = (year + 1, 1) if month == 12 else (year, month + 1)
    return (
        f"CREATE TABLE IF NOT EXISTS telemetry_y{year:04d}m{month:02d} PARTITION OF telemetry "
        f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
        f"TO ('{nyear:04d}-{nmonth:02d}-01 00:00:00+00')"
    )
