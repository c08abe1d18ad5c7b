"""Outcome queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.storage.tables import outcomes
from medrobotics.storage.upsert import upsert


def upsert_many(conn: Connection, *, items: Sequence[OutcomeIn]) -> int:
    """Insert outcomes or update the one already recorded for a procedure."""
    return upsert(conn, outcomes, "procedure_id", items)
