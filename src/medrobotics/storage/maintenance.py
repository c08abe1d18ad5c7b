"""Maintenance queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.storage.tables import maintenance
from medrobotics.storage.upsert import upsert


def upsert_many(conn: Connection, *, items: Sequence[MaintenanceIn]) -> int:
    """Insert maintenance visits or update known ones."""
    return upsert(conn, maintenance, "maintenance_id", items)
