"""Robot queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from medrobotics.domain.robots import RobotIn
from medrobotics.storage.tables import robots
from medrobotics.storage.upsert import upsert


def upsert_many(conn: Connection, *, items: Sequence[RobotIn]) -> int:
    """Insert robots or update the fields sent for known ones."""
    return upsert(conn, robots, "robot_id", items)


def existing_ids(conn: Connection, *, robot_ids: set[str]) -> set[str]:
    """Return which of `robot_ids` are known."""
    if not robot_ids:
        return set()
    rows = conn.execute(select(robots.c.robot_id).where(robots.c.robot_id.in_(robot_ids)))
    return {r[0] for r in rows}
