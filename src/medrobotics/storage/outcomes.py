"""Outcome queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from medrobotics.domain.outcomes import PHI_FIELDS, OutcomeIn
from medrobotics.storage import pages
from medrobotics.storage.keyset import Key, before, next_key
from medrobotics.storage.pages import Rows
from medrobotics.storage.tables import outcomes, procedures
from medrobotics.storage.upsert import upsert

KEY = ("start_time", "procedure_id")


def upsert_many(conn: Connection, *, items: Sequence[OutcomeIn]) -> int:
    """Insert outcomes or update the one already recorded for a procedure."""
    return upsert(conn, outcomes, "procedure_id", items)


def _select() -> Select[Any]:
    p = procedures.c
    return select(outcomes, p.robot_id, p.procedure_category, p.start_time).join(
        procedures, p.procedure_id == outcomes.c.procedure_id
    )


def get(conn: Connection, *, procedure_id: str) -> dict[str, Any] | None:
    """Return a procedure's outcome with the procedure's robot, category and start, or None."""
    stmt = _select().where(outcomes.c.procedure_id == procedure_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def page(
    conn: Connection,
    *,
    success_status: str | None = None,
    category: str | None = None,
    readmission: bool | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after: Key | None = None,
    limit: int,
    phi: bool = True,
) -> tuple[Rows, Key | None]:
    """Return outcomes newest procedure first from `after`, and the key of the next page.

    Without `phi` the surgeon's notes are left out.
    """
    p, o = procedures.c, outcomes.c
    conds = []
    if success_status is not None:
        conds.append(o.success_status == success_status)
    if category is not None:
        conds.append(p.procedure_category == category)
    if readmission is not None:
        conds.append(o.readmission_30day.is_(readmission))
    if start is not None:
        conds.append(p.start_time >= start)
    if end is not None:
        conds.append(p.start_time < end)
    if after is not None:
        conds.append(before(p.start_time, p.procedure_id, after))
    rows = pages.fetch(
        conn,
        _select().where(*conds),
        order=[p.start_time.desc(), p.procedure_id.desc()],
        limit=limit,
        omit=frozenset() if phi else frozenset(PHI_FIELDS),
        keys=KEY,
        ident="procedure_id",
        flag=PHI_FIELDS if phi else (),
    )
    return rows, next_key(rows, KEY)
