"""Ingestion statistics, computed from what is committed (so every task reports the same)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, text

from medrobotics.storage.tables import maintenance, outcomes, procedures, robots, telemetry

# Above this many rows an exact count(*) of telemetry costs seconds; the planner's estimate
# (kept fresh by autovacuum) is reported instead, and flagged as such.
EXACT_COUNT_LIMIT = 1_000_000


def totals(conn: Connection) -> tuple[dict[str, int], bool]:
    """Return rows per entity and whether the telemetry figure is an estimate."""
    out = {
        name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for name, table in (
            ("robots", robots),
            ("procedures", procedures),
            ("outcomes", outcomes),
            ("maintenance", maintenance),
        )
    }
    estimate = _telemetry_estimate(conn)
    if estimate is not None and estimate > EXACT_COUNT_LIMIT:
        out["telemetry"] = estimate
        return out, True
    out["telemetry"] = int(conn.execute(select(func.count()).select_from(telemetry)).scalar_one())
    return out, False


def _telemetry_estimate(conn: Connection) -> int | None:
    if conn.dialect.name != "postgresql":
        return None
    value = conn.execute(
        text(
            "SELECT sum(greatest(c.reltuples, 0))::bigint FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry'::regclass"
        )
    ).scalar()
    return int(value) if value is not None else 0


def recent(conn: Connection, *, now: datetime | None = None) -> dict[str, Any]:
    """Return samples received in the last minute and hour, who sent them, and the newest."""
    now = now or datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    recv = telemetry.c.received_at
    last_hour = conn.execute(
        select(
            func.count(),
            func.count(func.distinct(telemetry.c.robot_id)),
            func.count(func.distinct(telemetry.c.procedure_id)),
        ).where(recv >= hour_ago)
    ).one()
    last_minute = conn.execute(
        select(func.count()).where(recv >= now - timedelta(minutes=1))
    ).scalar_one()
    newest = [
        conn.execute(select(func.max(recv))).scalar(),
        *(
            conn.execute(select(func.max(t.c.updated_at))).scalar()
            for t in (robots, procedures, outcomes, maintenance)
        ),
    ]
    seen = [t for t in newest if t is not None]
    return {
        "samples_last_minute": int(last_minute),
        "samples_last_hour": int(last_hour[0]),
        "robots_reporting_last_hour": int(last_hour[1]),
        "procedures_reporting_last_hour": int(last_hour[2]),
        "last_ingest_at": max(seen) if seen else None,
    }
