"""Procedure queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from medrobotics.domain.procedures import PHI_FIELDS, ProcedureIn
from medrobotics.storage import telemetry as telemetry_q
from medrobotics.storage.db import first
from medrobotics.storage.keyset import Key, newest_first
from medrobotics.storage.pages import Query
from medrobotics.storage.tables import UtcDateTime, procedures, telemetry_summary
from medrobotics.storage.tables import outcomes as outcomes_t
from medrobotics.storage.tables import robots as robots_t
from medrobotics.storage.upsert import upsert


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
    row = first(conn, detail_select(), {"procedure_id": procedure_id})
    return detail_from(row) if row is not None else None


@cache
def detail_select() -> Select[Any]:
    """Return the one statement behind a procedure's detail (parameter `procedure_id`)."""
    p, s = procedures, telemetry_summary
    r, o = robots_t.alias("r"), outcomes_t.alias("o")
    cols = [c.label(f"p_{c.key}") for c in p.c]
    cols += [c.label(f"r_{c.key}") for c in r.c]
    cols += [c.label(f"o_{c.key}") for c in o.c]
    cols += [c.label(f"s_{c.key}") for c in s.c]
    joined = (
        p.outerjoin(r, r.c.robot_id == p.c.robot_id)
        .outerjoin(o, o.c.procedure_id == p.c.procedure_id)
        .outerjoin(s, s.c.procedure_id == p.c.procedure_id)
    )
    return select(*cols).select_from(joined).where(p.c.procedure_id == bindparam("procedure_id"))


def detail_from(row: Mapping[str, Any]) -> dict[str, Any]:
    """Shape a row of `detail_select` as the procedure's detail."""
    names = _detail_names()
    item = {k: row[f"p_{k}"] for k in names["p"]}
    item["robot"] = {k: row[f"r_{k}"] for k in names["r"]} if row["r_robot_id"] else None
    outcome = None
    if row["o_procedure_id"] is not None:
        outcome = {k: row[f"o_{k}"] for k in names["o"]}
        # As the outcome endpoints show it: with its procedure's robot, category and start.
        for name in ("robot_id", "procedure_category", "start_time"):
            outcome[name] = item[name]
    item["outcome"] = outcome
    summary = None
    if row["s_procedure_id"] is not None:
        summary = {k: row[f"s_{k}"] for k in names["s"]}
    item["telemetry"] = telemetry_q.summarize(summary)
    return item


@cache
def _detail_names() -> dict[str, tuple[str, ...]]:
    tables = {"p": procedures, "r": robots_t, "o": outcomes_t, "s": telemetry_summary}
    return {prefix: tuple(c.key for c in t.c) for prefix, t in tables.items()}


def page(
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
) -> Query:
    """Return the page of procedures to read, newest first from `after`.

    The time range applies to `start_time`: `start` inclusive, `end` exclusive. Without `phi`
    the patient fields are left out.
    """
    given = {
        "category": category,
        "robot_id": robot_id,
        "facility_id": facility_id,
        "surgeon_id": surgeon_id,
        "status": status,
        "start": start,
        "end": end,
    }
    return newest_first(
        "procedures",
        _listing,
        given,
        after=after,
        limit=limit,
        phi=phi,
        phi_fields=PHI_FIELDS,
    )


def _listing(names: tuple[str, ...]) -> Select[Any]:
    # The filters given, as bound parameters: one statement per combination of filters.
    p = procedures.c
    conds: dict[str, Any] = {
        "category": lambda: p.procedure_category == bindparam("category"),
        "robot_id": lambda: p.robot_id == bindparam("robot_id"),
        # A facility's robots are few: the IN list keeps the (robot_id, start_time) index usable.
        "facility_id": lambda: p.robot_id.in_(
            select(robots_t.c.robot_id).where(robots_t.c.facility_id == bindparam("facility_id"))
        ),
        "surgeon_id": lambda: p.surgeon_id == bindparam("surgeon_id"),
        "status": lambda: p.status == bindparam("status"),
        "start": lambda: p.start_time >= bindparam("start", type_=UtcDateTime),
        "end": lambda: p.start_time < bindparam("end", type_=UtcDateTime),
    }
    return select(procedures).where(*[conds[n]() for n in names])


def telemetry(conn: Connection, *, procedure_id: str, **series: Any) -> dict[str, Any] | None:
    """Return a procedure's downsampled telemetry (see `telemetry.series`), or None."""
    if not existing_ids(conn, procedure_ids={procedure_id}):
        return None
    return telemetry_q.series(conn, procedure_id=procedure_id, **series)
