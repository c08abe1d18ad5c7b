"""Procedure queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from medrobotics.domain.procedures import PHI_FIELDS, ProcedureIn
from medrobotics.storage import outcomes, pages, robots
from medrobotics.storage import telemetry as telemetry_q
from medrobotics.storage.keyset import Key, before, next_key
from medrobotics.storage.pages import Rows
from medrobotics.storage.tables import procedures
from medrobotics.storage.tables import robots as robots_t
from medrobotics.storage.upsert import upsert

KEY = ("start_time", "procedure_id")


def upsert_many(conn: Connection, *, items: Sequence[ProcedureIn]) -> int:
    """Insert procedures or update the fields a re-send carries (start, then end)."""
    return upsert(conn, procedures, "procedure_id", items)


def existing_ids(conn: Connection, *, procedure_ids: set[str]) -> set[str]:
    """Return which of `procedure_ids` are known."""
    if not procedure_ids:
        return set()
    column = procedures.c.procedure_id
    return {r[0] for r in conn.execute(select(column).where(column.in_(procedure_ids)))}


def get(conn: Connection, *, procedure_id: str) -> dict[str, Any] | None:
    """Return one procedure, or None."""
    stmt = select(procedures).where(procedures.c.procedure_id == procedure_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def detail(conn: Connection, *, procedure_id: str) -> dict[str, Any] | None:
    """Return a procedure with its robot, its outcome and its telemetry summary, or None."""
    item = get(conn, procedure_id=procedure_id)
    if item is None:
        return None
    item["robot"] = robots.get(conn, robot_id=item["robot_id"])
    item["outcome"] = outcomes.get(conn, procedure_id=procedure_id)
    item["telemetry"] = telemetry_q.summary(conn, procedure_id=procedure_id)
    return item


def page(
    conn: Connection,
    *,
    category: str | None = None,
    robot_id: str | None = None,
    facility_id: str | None = None,
    surgeon_id: str | None = None,
    status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after: Key | None = None,
    limit: int,
    phi: bool = True,
) -> tuple[Rows, Key | None]:
    """Return procedures newest first from `after`, and the key of the next page (or None).

    The time range applies to `start_time`: `start` inclusive, `end` exclusive. Without `phi`
    the patient fields are left out.
    """
    p = procedures.c
    conds = []
    if category is not None:
        conds.append(p.procedure_category == category)
    if robot_id is not None:
        conds.append(p.robot_id == robot_id)
    if facility_id is not None:
        # A facility's robots are few: the IN list keeps the (robot_id, start_time) index usable.
        fleet = select(robots_t.c.robot_id).where(robots_t.c.facility_id == facility_id)
        conds.append(p.robot_id.in_(fleet))
    if surgeon_id is not None:
        conds.append(p.surgeon_id == surgeon_id)
    if status is not None:
        conds.append(p.status == status)
    if start is not None:
        conds.append(p.start_time >= start)
    if end is not None:
        conds.append(p.start_time < end)
    if after is not None:
        conds.append(before(p.start_time, p.procedure_id, after))
    rows = pages.fetch(
        conn,
        select(procedures).where(*conds),
        order=[p.start_time.desc(), p.procedure_id.desc()],
        limit=limit,
        omit=frozenset() if phi else frozenset(PHI_FIELDS),
        keys=KEY,
        ident="procedure_id",
        flag=PHI_FIELDS if phi else (),
    )
    return rows, next_key(rows, KEY)


def telemetry(conn: Connection, *, procedure_id: str, **series: Any) -> dict[str, Any] | None:
    """Return a procedure's downsampled telemetry (see `telemetry.series`), or None."""
    if not existing_ids(conn, procedure_ids={procedure_id}):
        return None
    return telemetry_q.series(conn, procedure_id=procedure_id, **series)
