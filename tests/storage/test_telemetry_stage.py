"""The re-send path's staging table: nothing about it outlives the transaction that made it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from medrobotics.domain.telemetry import COLUMNS
from medrobotics.ingestion import flows
from medrobotics.storage import telemetry
from medrobotics.storage.db import make_engine, transaction
from medrobotics.storage.tables import telemetry as telemetry_table
from tests.conftest import clean

T0 = datetime(2025, 10, 27, 10, tzinfo=UTC)


def rows(first: int, count: int) -> list[tuple[Any, ...]]:
    values = {c: None for c in COLUMNS} | {"procedure_id": "proc-stage", "robot_id": "robot-1"}
    return [
        tuple(
            (values | {"timestamp": T0 + timedelta(seconds=n), "arm_rotation": n})[c]
            for c in COLUMNS
        )
        for n in range(first, first + count)
    ]


def backend(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def staged(conn: Connection) -> bool:
    found = conn.execute(text("SELECT to_regclass('pg_temp.telemetry_stage')")).scalar_one()
    return found is not None


@pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)
def test_a_resend_after_a_rolled_back_stage_succeeds(migrated_engine: Engine) -> None:
    clean(migrated_engine)
    # One pooled connection: every step below runs on the same database session.
    engine = make_engine(migrated_engine.url.render_as_string(hide_password=False), pool_size=1)
    try:
        assert flows.write(engine, "telemetry", rows(0, 3)) == 3  # new: the direct COPY
        with transaction(engine) as conn:
            session = backend(conn)
        with pytest.raises(RuntimeError), transaction(engine) as conn:
            assert backend(conn) == session
            assert telemetry.insert_many(conn, rows=rows(0, 3)) == 0  # a re-send: staged
            assert staged(conn)
            raise RuntimeError("the request fails later: everything rolls back")
        with transaction(engine) as conn:
            assert backend(conn) == session
            assert not staged(conn)  # the rollback took the table with it
            # Re-sent on the same session: the stage is made again, not assumed.
            assert telemetry.insert_many(conn, rows=rows(0, 5)) == 2
            # A second re-send in the same transaction sees none of the first one's rows.
            assert telemetry.insert_many(conn, rows=rows(4, 3)) == 2
        assert flows.write(engine, "telemetry", rows(0, 8)) == 1
        with engine.connect() as conn:
            assert backend(conn) == session
            stored = select(func.count()).select_from(telemetry_table)
            assert conn.execute(stored).scalar_one() == 8
    finally:
        engine.dispose()
