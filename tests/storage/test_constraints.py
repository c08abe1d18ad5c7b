"""The schema itself refuses what the data model forbids, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from medrobotics.storage import telemetry as telemetry_q
from medrobotics.storage.tables import maintenance, outcomes, procedures, robots, telemetry

T0 = datetime(2025, 10, 27, 10, 0, tzinfo=UTC)


def robot(**kw: Any) -> dict[str, Any]:
    row = {
        "robot_id": "robot-1",
        "robot_model": "DaVinci Xi",
        "facility_id": "fac-1",
        "robot_serial_number": "SN-1",
        "status": "operational",
    }
    return row | kw


def procedure(**kw: Any) -> dict[str, Any]:
    row = {
        "procedure_id": "proc-1",
        "robot_id": "robot-1",
        "procedure_category": "urological",
        "start_time": T0,
        "status": "completed",
    }
    return row | kw


def outcome(**kw: Any) -> dict[str, Any]:
    row = {"procedure_id": "proc-1", "success_status": "successful", "complications": []}
    return row | kw


def visit(**kw: Any) -> dict[str, Any]:
    row = {
        "maintenance_id": "m-1",
        "robot_id": "robot-1",
        "maintenance_date": date(2025, 1, 1),
        "maintenance_type": "routine",
        "parts_replaced": [],
    }
    return row | kw


def _seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(robots), robot())
        conn.execute(insert(procedures), procedure())


VIOLATIONS = [
    ("robots", robot(robot_id="robot-2", status="broken")),
    ("robots", robot(robot_id="robot-2")),  # duplicate serial number
    ("robots", robot()),  # duplicate id
    ("procedures", procedure(procedure_id="p2", procedure_category="dental")),
    ("procedures", procedure(procedure_id="p2", status="paused")),
    ("procedures", procedure(procedure_id="p2", end_time=T0 - timedelta(minutes=1))),
    ("procedures", procedure(procedure_id="p2", patient_age=121)),
    ("procedures", procedure(procedure_id="p2", patient_age=-1)),
    ("procedures", procedure(procedure_id="p2", complexity_score=5.5)),
    ("procedures", procedure(procedure_id="p2", complexity_score=0.5)),
    ("procedures", procedure()),  # duplicate id
    ("outcomes", outcome(procedure_id="unknown")),
    ("outcomes", outcome(success_status="meh")),
    ("outcomes", outcome(blood_loss_ml=-1)),
    ("outcomes", outcome(hospital_stay_days=-1)),
    ("outcomes", outcome(patient_satisfaction_score=11)),
    ("outcomes", outcome(patient_satisfaction_score=0)),
    ("outcomes", outcome(recovery_score=101)),
    ("maintenance", visit(robot_id="unknown")),
    ("maintenance", visit(maintenance_type="cleaning")),
    ("maintenance", visit(downtime_hours=-1)),
    ("maintenance", visit(cost=-5)),
    ("maintenance", visit(next_maintenance_date=date(2024, 12, 31))),
]
TABLES = {
    "robots": robots,
    "procedures": procedures,
    "outcomes": outcomes,
    "maintenance": maintenance,
}


@pytest.mark.parametrize(("table", "row"), VIOLATIONS, ids=lambda v: str(v)[:40])
def test_schema_refuses(engine: Engine, table: str, row: dict[str, Any]) -> None:
    _seed(engine)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(TABLES[table]), row)


def test_one_outcome_per_procedure(engine: Engine) -> None:
    _seed(engine)
    with engine.begin() as conn:
        conn.execute(insert(outcomes), outcome())
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(outcomes), outcome(success_status="failed"))


def test_valid_rows_are_accepted(engine: Engine) -> None:
    _seed(engine)
    with engine.begin() as conn:
        conn.execute(insert(outcomes), outcome(blood_loss_ml=0, patient_satisfaction_score=10))
        conn.execute(insert(maintenance), visit(next_maintenance_date=date(2025, 1, 1)))


def test_telemetry_key_is_robot_procedure_time(engine: Engine) -> None:
    row = ("proc-1", "robot-1", T0, *([1.0] * 4), "Grasper", *([2.0] * 9))
    with engine.begin() as conn:
        assert telemetry_q.insert_many(conn, rows=[row]) == 1
    with engine.begin() as conn:
        # Same key again (even with other readings): skipped, not duplicated.
        changed = ("proc-1", "robot-1", T0, *([9.0] * 4), "Grasper", *([9.0] * 9))
        other_robot = ("proc-1", "robot-2", T0, *([1.0] * 4), None, *([None] * 9))
        assert telemetry_q.insert_many(conn, rows=[changed, other_robot]) == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            insert(telemetry),
            {"procedure_id": "proc-1", "robot_id": "robot-1", "timestamp": T0, "received_at": T0},
        )
