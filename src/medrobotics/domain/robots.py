"""Robot wire schemas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from medrobotics.domain.types import INPUT, NEXT, Day, EventDay, Id, Text, UtcDateTime

RobotStatus = Literal["operational", "maintenance", "retired"]
ROBOT_STATUSES: tuple[str, ...] = ("operational", "maintenance", "retired")


class RobotIn(BaseModel):
    """A robot as sent to ingestion; re-sending the same `robot_id` updates it."""

    model_config = INPUT

    robot_id: Id
    robot_serial_number: Text | None = None
    robot_model: Text
    manufacturer: Text | None = None
    installation_date: EventDay | None = None
    facility_id: Id
    facility_name: Text | None = None
    status: RobotStatus = "operational"
    last_maintenance_date: EventDay | None = None
    firmware_version: Text | None = None


class RobotOut(BaseModel):
    """A robot as the API returns it."""

    robot_id: str
    robot_serial_number: str | None
    robot_model: str
    manufacturer: str | None
    installation_date: Day | None
    facility_id: str
    facility_name: str | None
    status: RobotStatus
    last_maintenance_date: Day | None
    firmware_version: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ProcedureBrief(BaseModel):
    """A procedure named without patient data: enough to link to it."""

    procedure_id: str
    procedure_type: str | None
    procedure_category: str
    start_time: UtcDateTime
    end_time: UtcDateTime | None
    status: str


class MaintenanceSummary(BaseModel):
    """A robot's service history in brief."""

    visits: int
    total_cost: float = Field(description="USD, every visit, to the cent.")
    total_downtime_hours: float = Field(description="Every visit, to 3 decimals.")
    last_maintenance_date: Day | None = Field(description="Latest recorded visit.")
    last_maintenance_type: str | None
    next_maintenance_date: Day | None = Field(description="Planned at the latest visit.")


class RobotDetail(RobotOut):
    """A robot with its procedure count, last procedure and maintenance summary."""

    procedure_count: int = Field(description="Procedures recorded for this robot (any status).")
    last_procedure: ProcedureBrief | None = Field(description="The latest by start time.")
    maintenance: MaintenanceSummary


class RobotPage(BaseModel):
    """One page of robots, ordered by `robot_id` (offset pagination)."""

    items: list[RobotOut]
    total: int = Field(description="Robots matching the filters, across all pages.")
    limit: int
    offset: int
    next: str | None = Field(description=NEXT)
