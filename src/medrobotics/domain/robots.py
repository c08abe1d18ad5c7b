"""Robot wire schemas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from medrobotics.domain.types import INPUT, Day, Id, Text, UtcDateTime

RobotStatus = Literal["operational", "maintenance", "retired"]
ROBOT_STATUSES: tuple[str, ...] = ("operational", "maintenance", "retired")


class RobotIn(BaseModel):
    """A robot as sent to ingestion; re-sending the same `robot_id` updates it."""

    model_config = INPUT

    robot_id: Id
    robot_serial_number: Text | None = None
    robot_model: Text
    manufacturer: Text | None = None
    installation_date: Day | None = None
    facility_id: Id
    facility_name: Text | None = None
    status: RobotStatus = "operational"
    last_maintenance_date: Day | None = None
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
