"""Robot queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select

from medrobotics.domain.robots import RobotIn
from medrobotics.storage import maintenance, pages
from medrobotics.storage.pages import Query
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
    *,
    facility_id: str | None = None,
    status: str | None = None,
    model: str | None = None,
    limit: int,
    offset: int = 0,
) -> Query:
    """Return the page of robots ordered by id (with how many match in all) to read."""
    given = {"facility_id": facility_id, "status": status, "robot_model": model}
    params = {k: v for k, v in given.items() if v is not None}
    names = tuple(params)
    shape = pages.Shape(name=("robots", names), order=_by_id, total=True)
    return Query(lambda: _listing(names), shape, params, limit, offset)


def _by_id() -> list[Any]:
    return [robots.c.robot_id]


def _listing(names: tuple[str, ...]) -> Select[Any]:
    return select(robots).where(*[robots.c[n] == bindparam(n) for n in names])


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
