"""Small factories: a reproducible fleet written through the storage write functions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from medrobotics.domain.maintenance import MAINTENANCE_TYPES, MaintenanceIn
from medrobotics.domain.outcomes import SUCCESS_STATUSES, OutcomeIn
from medrobotics.domain.procedures import CATEGORIES, ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import READINGS, TelemetryIn
from medrobotics.storage import maintenance, outcomes, procedures, robots, telemetry

FACILITIES = [("fac-boston", "Boston General"), ("fac-austin", "Austin Medical"), ("fac-nyc", None)]
MODELS = ["DaVinci Xi", "Versius", "Hugo RAS"]
STATUSES = ["operational", "operational", "maintenance", "retired"]
COMPLICATIONS = ["minor bleeding", "infection", "ileus"]


@dataclass
class Fleet:
    """What was written, for tests to compute expected answers from."""

    now: datetime
    robots: list[RobotIn] = field(default_factory=list)
    procedures: list[ProcedureIn] = field(default_factory=list)
    outcomes: list[OutcomeIn] = field(default_factory=list)
    maintenance: list[MaintenanceIn] = field(default_factory=list)
    telemetry: list[TelemetryIn] = field(default_factory=list)

    def procedure(self, procedure_id: str) -> ProcedureIn:
        return next(p for p in self.procedures if p.procedure_id == procedure_id)

    def robot(self, robot_id: str) -> RobotIn | None:
        return next((r for r in self.robots if r.robot_id == robot_id), None)


def make_fleet(*, seed: int = 7, now: datetime | None = None, n_procedures: int = 90) -> Fleet:
    """Build (not write) a fleet whose procedures all started in the 60 days before `now`."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(microsecond=0)
    fleet = Fleet(now=now)
    for i in range(7):
        fac_id, fac_name = FACILITIES[i % len(FACILITIES)]
        fleet.robots.append(
            RobotIn(
                robot_id=f"robot-{i + 1}",
                robot_serial_number=f"SN-{1000 + i}",
                robot_model=MODELS[i % len(MODELS)],
                manufacturer="Acme Surgical",
                installation_date=date(2022, 1 + i, 1),
                facility_id=fac_id,
                facility_name=fac_name,
                status=STATUSES[i % len(STATUSES)],  # type: ignore[arg-type]
                firmware_version=f"4.{i}",
            )
        )
    # Robot 7 never operates; "robot-ghost" operates but is not in the registry.
    operating = [r.robot_id for r in fleet.robots[:6]] + ["robot-ghost"]
    for i in range(n_procedures):
        start = now - timedelta(days=rng.uniform(0.5, 60), seconds=rng.randint(0, 59))
        start = start.replace(microsecond=rng.choice([0, 123456, 500000]))
        status = rng.choice(["completed"] * 6 + ["in_progress", "aborted", "cancelled"])
        end = start + timedelta(minutes=rng.randint(30, 300)) if status != "in_progress" else None
        fleet.procedures.append(
            ProcedureIn(
                procedure_id=f"proc-{i:03d}",
                robot_id=rng.choice(operating),
                procedure_type=rng.choice(["Radical Prostatectomy", "Hysterectomy", "Lobectomy"]),
                procedure_category=rng.choice(CATEGORIES),  # type: ignore[arg-type]
                start_time=start,
                end_time=end,
                surgeon_id=f"surgeon-{rng.randint(1, 4)}",
                surgeon_name="Dr. Example",
                patient_id=f"patient-{i}",
                patient_age=rng.randint(20, 90),
                patient_gender=rng.choice(["F", "M"]),
                complexity_score=round(rng.uniform(1, 5), 1),
                status=status,  # type: ignore[arg-type]
            )
        )
    # Two procedures with the same start time: the id breaks the tie in the ordering.
    twin = fleet.procedures[1].model_copy(update={"procedure_id": "proc-twin"})
    fleet.procedures.append(twin)
    for p in fleet.procedures:
        if p.status == "in_progress" or rng.random() < 0.15:
            continue
        n = rng.choice([0, 0, 1, 2])
        fleet.outcomes.append(
            OutcomeIn(
                procedure_id=p.procedure_id,
                success_status=rng.choice(SUCCESS_STATUSES),  # type: ignore[arg-type]
                blood_loss_ml=rng.choice([None, round(rng.uniform(10, 800), 1)]),
                complications=rng.sample(COMPLICATIONS, n),
                hospital_stay_days=float(rng.randint(0, 10)),
                readmission_30day=rng.random() < 0.2,
                patient_satisfaction_score=rng.choice([None, float(rng.randint(1, 10))]),
                surgeon_notes=f"notes for {p.procedure_id}",
                recovery_score=float(rng.randint(1, 100)),
                follow_up_required=rng.random() < 0.5,
            )
        )
    for i in range(25):
        robot = rng.choice(fleet.robots[:5])
        day = now.date() - timedelta(days=rng.randint(0, 400))
        fleet.maintenance.append(
            MaintenanceIn(
                maintenance_id=f"mnt-{i:03d}",
                robot_id=robot.robot_id,
                maintenance_date=day,
                maintenance_type=rng.choice(MAINTENANCE_TYPES),  # type: ignore[arg-type]
                technician_name="Tech",
                parts_replaced=["arm joint"] if rng.random() < 0.3 else [],
                downtime_hours=float(rng.randint(0, 48)),
                next_maintenance_date=day + timedelta(days=90),
                cost=round(rng.uniform(0, 20_000), 2),
            )
        )
    return fleet


def make_samples(
    procedure: ProcedureIn, *, count: int, step_ms: int, seed: int = 3
) -> list[TelemetryIn]:
    """Samples every `step_ms` from a whole second, some channels missing at random."""
    rng = random.Random(seed)
    t0 = procedure.start_time.replace(microsecond=0) + timedelta(seconds=1)
    out = []
    for i in range(count):
        values = {name: round(rng.uniform(0, 100), 3) for name in READINGS}  # in every range
        if i % 3 == 0:
            values["grip_pressure"] = None  # type: ignore[assignment]
        values["camera_zoom"] = None  # type: ignore[assignment]
        out.append(
            TelemetryIn(
                procedure_id=procedure.procedure_id,
                robot_id=procedure.robot_id,
                timestamp=t0 + timedelta(milliseconds=i * step_ms),
                tool_type="Grasper",
                **values,  # type: ignore[arg-type]
            )
        )
    return out


def write(engine: Engine, fleet: Fleet) -> Fleet:
    """Write the fleet through the storage write functions."""
    rows = [s.row() for s in fleet.telemetry]
    with engine.begin() as conn:
        robots.upsert_many(conn, items=fleet.robots)
        procedures.upsert_many(conn, items=fleet.procedures)
        outcomes.upsert_many(conn, items=fleet.outcomes)
        maintenance.upsert_many(conn, items=fleet.maintenance)
        telemetry.insert_many(conn, rows=rows)
    return fleet
