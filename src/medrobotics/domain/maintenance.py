"""Maintenance wire schemas."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from medrobotics.domain.types import INPUT, EventDay, Id, LongText, PlanDay, Text

MaintenanceType = Literal["routine", "emergency", "upgrade", "calibration"]
MAINTENANCE_TYPES: tuple[str, ...] = ("routine", "emergency", "upgrade", "calibration")
MAX_COST = 10_000_000
"""USD per visit: above any real service bill, far below what could overflow a fleet's sum."""


class MaintenanceIn(BaseModel):
    """One service visit to a known robot; re-sending the same `maintenance_id` updates it."""

    model_config = INPUT

    maintenance_id: Id
    robot_id: Id
    maintenance_date: EventDay
    maintenance_type: MaintenanceType
    technician_id: Id | None = None
    technician_name: Text | None = None
    issues_found: LongText | None = None
    actions_taken: LongText | None = None
    parts_replaced: Annotated[list[Text], Field(max_length=100)] = Field(default_factory=list)
    downtime_hours: float = Field(0.0, ge=0, le=24 * 365, allow_inf_nan=False)
    next_maintenance_date: PlanDay | None = None
    cost: float = Field(0.0, ge=0, le=MAX_COST, allow_inf_nan=False)

    @field_validator("next_maintenance_date")
    @classmethod
    def _next_after(cls, value: date | None, info: ValidationInfo) -> date | None:
        # On the field, so that the error names it.
        done = info.data.get("maintenance_date")
        if value is not None and done is not None and value < done:
            raise ValueError("must not be before maintenance_date")
        return value
