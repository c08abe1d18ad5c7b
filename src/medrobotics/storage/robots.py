"""Robot queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from medrobotics.domain.robots import RobotIn
from medrobotics.storage import maintenance, pages
from medrobotics.storage.pages import Rows
from medrobotics.storage.tables import procedures, robots
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


def get(conn: Connection, *, robot_id: str) -> dict[str, Any] | None:
    """Return one robot, or None."""
    row = conn.execute(select(robots).where(robots.c.robot_id == robot_id)).mappings().first()
    return dict(row) if row is not None else None


def page(
    conn: Connection,
    *,
    facility_id: str | None = None,
    status: str | None = None,
    model: str | None = None,
    limit: int,
    offset: int = 0,
) -> tuple[Rows, int]:
    """Return one page of robots ordered by id, and how many match in all."""
    conds = []
    if facility_id is not None:
        conds.append(robots.c.facility_id == facility_id)
    if status is not None:
        conds.append(robots.c.status == status)
    if model is not None:
        conds.append(robots.c.robot_model == model)
    stmt = select(robots).where(*conds)
    rows = pages.fetch(conn, stmt, order=[robots.c.robot_id], limit=limit, offset=offset)
    total = conn.execute(select(func.count()).select_from(robots).where(*conds)).scalar_one()
    return rows, int(total)


def detail(conn: Connection, *, robot_id: str) -> dict[str, Any] | None:
    """Return a robot with its procedure count, last procedure and maintenance summary."""
    robot = get(conn, robot_id=robot_id)
    if robot is None:
        return None
    p = procedures.c
    robot["procedure_count"] = int(
        conn.execute(select(func.count()).where(p.robot_id == robot_id)).scalar_one()
    )
    last = (
        conn.execute(
            select(
                p.procedure_id,
                p.procedure_type,
                p.procedure_category,
                p.start_time,
                p.end_time,
                p.status,
            )
            .where(p.robot_id == robot_id)
            .order_by(p.start_time.desc(), p.procedure_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    robot["last_procedure"] = dict(last) if last is not None else None
    robot["maintenance"] = maintenance.summary(conn, robot_id=robot_id)
    return robot
