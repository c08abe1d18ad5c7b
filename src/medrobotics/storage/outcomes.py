"""Outcome queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Select,
    bindparam,
    select,
)

from medrobotics.domain.outcomes import PHI_FIELDS, OutcomeIn
from medrobotics.storage.keyset import Key, newest_first
from medrobotics.storage.pages import Query
from medrobotics.storage.tables import UtcDateTime, outcomes, procedures
from medrobotics.storage.upsert import upsert


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
    *,
    success_status: str | None = None,
    category: str | None = None,
    readmission: bool | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after: Key | None = None,
    limit: int,
    phi: bool = True,
) -> Query:
    """Return the page of outcomes to read, newest procedure first from `after`.

    Without `phi` the surgeon's notes are left out.
    """
    given = {
        "success_status": success_status,
        "category": category,
        "readmission": readmission,
        "start": start,
        "end": end,
    }
    return newest_first(
        "outcomes",
        _listing,
        given,
        after=after,
        limit=limit,
        phi=phi,
        phi_fields=PHI_FIELDS,
    )


def _listing(names: tuple[str, ...]) -> Select[Any]:
    # The filters given, as bound parameters: one statement per combination of filters.
    conds = _conditions()
    return _select().where(*[conds[n]() for n in names])


def _conditions() -> dict[str, Any]:
    p, o = procedures.c, outcomes.c
    return {
        "success_status": lambda: o.success_status == bindparam("success_status"),
        "category": lambda: p.procedure_category == bindparam("category"),
        "readmission": lambda: o.readmission_30day == bindparam("readmission", type_=Boolean),
        "start": lambda: p.start_time >= bindparam("start", type_=UtcDateTime),
        "end": lambda: p.start_time < bindparam("end", type_=UtcDateTime),
    }
