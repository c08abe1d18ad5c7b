"""Sums and means come rounded to their unit's precision, the same on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import Engine

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.domain.units import rounded
from medrobotics.storage import maintenance, outcomes, procedures, robots, telemetry
from medrobotics.storage.db import transaction
from tests import factories as f

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
DAY = {"start": "2025-03-10T00:00:00Z", "end": "2025-03-11T00:00:00Z"}
# Summed in this order, Python's floats give 14.799999999999999 and 0.30000000000000004.
DOWNTIME = [4.9, 5.1, 3.7, 1.1]
COSTS = [0.1, 0.2, 0.0, 0.0]


def _parse(model: type[BaseModel], record: dict[str, Any]) -> Any:
    return model.model_validate_json(orjson.dumps(record))


@pytest.fixture
def written(engine: Engine) -> None:
    """Three procedures, their outcomes, four visits and three samples with noisy sums."""
    procs = [
        _parse(
            ProcedureIn,
            f.procedure(
                i + 1,
                start_time=(T0 + timedelta(hours=i)).isoformat(),
                end_time=None,
                duration_minutes=minutes,
                complexity_score=score,
                status="completed",
            ),
        )
        for i, (minutes, score) in enumerate([(10.0, 3.0), (10.0, 3.0), (11.0, 4.0)])
    ]
    outs = [
        _parse(
            OutcomeIn,
            f.outcome(
                i + 1,
                blood_loss_ml=loss,
                hospital_stay_days=stay,
                patient_satisfaction_score=happy,
                complications=["ileus"] if i == 0 else [],
                readmission_30day=i > 0,
            ),
        )
        for i, (loss, stay, happy) in enumerate([(100, 1, 7), (100, 2, 8), (101, 2, 8)])
    ]
    visits = [
        _parse(
            MaintenanceIn,
            f.visit(
                i + 1,
                maintenance_date="2025-03-10",
                downtime_hours=hours,
                cost=cost,
                next_maintenance_date=None,
            ),
        )
        for i, (hours, cost) in enumerate(zip(DOWNTIME, COSTS, strict=True))
    ]
    samples = [
        _parse(TelemetryIn, s | {"arm_position_x": x, "grip_pressure": grip})
        for s, x, grip in zip(
            f.samples(3, start=T0, every_ms=1000), [1.0, 1.0, 2.0], [0.1, 0.2, 0.3], strict=True
        )
    ]
    with transaction(engine) as conn:
        robots.upsert_many(conn, items=[_parse(RobotIn, f.robot(1))])
        procedures.upsert_many(conn, items=procs)
        outcomes.upsert_many(conn, items=outs)
        maintenance.upsert_many(conn, items=visits)
        telemetry.insert_many(conn, rows=[s.row() for s in samples])


def _get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_rounding_keeps_signs_and_nones() -> None:
    assert sum(DOWNTIME) == 14.799999999999999 and sum(COSTS) == 0.30000000000000004
    assert rounded(sum(DOWNTIME), 3) == 14.8 and rounded(sum(COSTS), 2) == 0.3
    assert str(rounded(-0.0001, 2)) == "0.0" and rounded(None, 2) is None


def test_maintenance_totals(client: TestClient, written: None) -> None:
    summary = _get(client, "/api/robots/robot-1")["maintenance"]
    assert (summary["total_cost"], summary["total_downtime_hours"]) == (0.3, 14.8)
    body = _get(client, "/api/analytics/maintenance-costs", **DAY)
    assert (body["total_cost"], body["downtime_hours"]) == (0.3, 14.8)
    assert (body["robots"][0]["total_cost"], body["robots"][0]["downtime_hours"]) == (0.3, 14.8)


def test_procedure_figures(client: TestClient, written: None) -> None:
    body = _get(client, "/api/analytics/robot-utilization", **DAY)
    assert body["window"]["hours"] == 24.0
    robot = body["robots"][0]
    # 31 minutes: 0.51666... hours, 0.021527... of the day.
    assert (robot["hours_in_use"], robot["utilization"]) == (0.517, 0.0215)
    assert (body["facilities"][0]["hours_in_use"], body["facilities"][0]["utilization"]) == (
        0.517,
        0.0215,
    )
    body = _get(client, "/api/analytics/procedures-by-category", **DAY)
    uro = next(c for c in body["categories"] if c["procedure_category"] == "urological")
    assert (uro["mean_duration_minutes"], uro["mean_complexity"]) == (10.33, 3.33)
    body = _get(client, "/api/analytics/procedure-volume", **DAY)
    bucket = body["buckets"][0]
    assert (bucket["total_duration_minutes"], bucket["mean_duration_minutes"]) == (31.0, 10.33)
    one = _get(client, "/api/analytics/procedure-volume", robot_id="robot-1", **DAY)
    assert one["buckets"] == body["buckets"]


def test_outcome_figures(client: TestClient, written: None) -> None:
    overall = _get(client, "/api/analytics/outcomes-summary", **DAY)["overall"]
    assert overall["complication_rate"] == 0.3333 and overall["readmission_rate"] == 0.6667
    assert overall["mean_blood_loss_ml"] == 100.3
    assert overall["mean_hospital_stay_days"] == 1.67
    assert overall["mean_patient_satisfaction"] == 7.67


def test_telemetry_means(client: TestClient, written: None) -> None:
    channels = _get(client, "/api/procedures/proc-1")["telemetry"]["channels"]
    assert channels["arm_position_x"]["mean"] == 1.333
    assert channels["grip_pressure"]["mean"] == 0.2
    series = _get(client, "/api/procedures/proc-1/telemetry", interval_ms=60_000)
    assert series["values"]["arm_position_x"] == [1.333]
    assert series["values"]["grip_pressure"] == [0.2]
