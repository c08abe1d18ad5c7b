"""Maintenance wire schemas."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from medrobotics.domain.types import INPUT, Day, Id, LongText, Text

MaintenanceType = Literal["routine", "emergency", "upgrade", "calibration"]
MAINTENANCE_TYPES: tuple[str, ...] = ("routine", "emergency", "upgrade", "calibration")


class MaintenanceIn(BaseModel):
    """One service visit to a known robot; re-sending the same `maintenance_id` updates it."""

    model_config = INPUT

    maintenance_id: Id
    robot_id: Id
    maintenance_date: Day
    maintenance_type: MaintenanceType
    technician_id: Id | None = None
    technician_name: Text | None = None
    issues_found: LongText | None = None
    actions_taken: LongText | None = None
    parts_replaced: Annotated[list[Text], Field(max_length=100)] = Field(default_factory=list)
    downtime_hours: float = Field(0.0, ge=0, le=24 * 365, allow_inf_nan=False)
    next_maintenance_date: Day | None = None
    cost: float = Field(0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _next_after(self) -> MaintenanceIn:
        if self.next_maintenance_date and self.next_maintenance_date < self.maintenance_date:
            raise ValueError("next_maintenance_date must not be before maintenance_date")
        return self
