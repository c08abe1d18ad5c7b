"""Maintenance queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.units import HOURS, USD, rounded
from medrobotics.storage.tables import maintenance
from medrobotics.storage.upsert import upsert


def upsert_many(conn: Connection, *, items: Sequence[MaintenanceIn]) -> int:
    """Insert maintenance visits or update known ones."""
    return upsert(conn, maintenance, "maintenance_id", items)


def summary(conn: Connection, *, robot_id: str) -> dict[str, Any]:
    """Return a robot's visit count, cost and downtime totals, and its latest visit."""
    m = maintenance.c
    visits, cost, downtime = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(m.cost), 0),
            func.coalesce(func.sum(m.downtime_hours), 0),
        ).where(m.robot_id == robot_id)
    ).one()
    last = conn.execute(
        select(m.maintenance_date, m.maintenance_type, m.next_maintenance_date)
        .where(m.robot_id == robot_id)
        .order_by(m.maintenance_date.desc(), m.maintenance_id.desc())
        .limit(1)
    ).first()
    return {
        "visits": int(visits),
        "total_cost": rounded(float(cost), USD),
        "total_downtime_hours": rounded(float(downtime), HOURS),
        "last_maintenance_date": last[0] if last else None,
        "last_maintenance_type": last[1] if last else None,
        "next_maintenance_date": last[2] if last else None,
    }
