"""Procedure queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from medrobotics.domain.procedures import ProcedureIn
from medrobotics.storage.tables import procedures
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
