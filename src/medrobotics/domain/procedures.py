"""Procedure wire schemas."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from medrobotics.domain.outcomes import OutcomeOut
from medrobotics.domain.robots import RobotOut
from medrobotics.domain.telemetry import TelemetrySummary
from medrobotics.domain.types import INPUT, NEXT, EventTime, Id, Text, UtcDateTime

Category = Literal["urological", "gynecological", "cardiac", "thoracic", "general", "orthopedic"]
CATEGORIES: tuple[str, ...] = (
    "urological",
    "gynecological",
    "cardiac",
    "thoracic",
    "general",
    "orthopedic",
)
ProcedureStatus = Literal["completed", "in_progress", "aborted", "cancelled"]
PROCEDURE_STATUSES: tuple[str, ...] = ("completed", "in_progress", "aborted", "cancelled")
PHI_FIELDS: tuple[str, ...] = ("patient_id", "patient_age", "patient_gender")
MAX_DURATION = timedelta(days=7)
"""The longest a procedure may last, sent as `duration_minutes` or derived from its times."""


class ProcedureIn(BaseModel):
    """A procedure as sent at its start and again at its end (same `procedure_id`: an update).

    Fields left out of a re-send keep their stored values. `duration_minutes` is derived from
    the two times when absent; either way a procedure lasts at most 7 days. `status` defaults
    to `completed` when `end_time` is given and to `in_progress` otherwise.
    """

    model_config = INPUT

    procedure_id: Id
    robot_id: Id
    procedure_type: Text | None = None
    procedure_category: Category
    start_time: EventTime
    end_time: EventTime | None = None
    duration_minutes: float | None = Field(
        None, ge=0, le=MAX_DURATION.total_seconds() / 60, allow_inf_nan=False
    )
    surgeon_id: Id | None = None
    surgeon_name: Text | None = None
    patient_id: Id | None = None
    patient_age: int | None = Field(None, ge=0, le=120)
    patient_gender: Text | None = None
    complexity_score: float | None = Field(None, ge=1.0, le=5.0, allow_inf_nan=False)
    status: ProcedureStatus | None = None

    @field_validator("end_time")
    @classmethod
    def _end_in_reach(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # Checked on the field, so that the error names it; the derived duration obeys the
        # bound a sent one does.
        start = info.data.get("start_time")
        if value is None or start is None:
            return value
        if value < start:
            raise ValueError("must not be before start_time")
        if value - start > MAX_DURATION:
            raise ValueError("must be at most 7 days after start_time")
        return value

    @model_validator(mode="after")
    def _derive(self) -> ProcedureIn:
        if self.end_time is not None and self.duration_minutes is None:
            seconds = (self.end_time - self.start_time).total_seconds()
            self.duration_minutes = round(seconds / 60, 2)
        if self.status is None:
            self.status = "completed" if self.end_time is not None else "in_progress"
        return self


_PHI = "Omitted without the phi:read scope."


class ProcedureOut(BaseModel):
    """A procedure as the API returns it."""

    procedure_id: str
    robot_id: str
    procedure_type: str | None
    procedure_category: Category
    start_time: UtcDateTime
    end_time: UtcDateTime | None
    duration_minutes: float | None
    surgeon_id: str | None
    surgeon_name: str | None
    patient_id: str | None = Field(None, description=f"Pseudonym. {_PHI}")
    patient_age: int | None = Field(None, description=_PHI)
    patient_gender: str | None = Field(None, description=_PHI)
    complexity_score: float | None
    status: ProcedureStatus
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ProcedureDetail(ProcedureOut):
    """A procedure with its robot, its outcome and a summary of its telemetry."""

    robot: RobotOut | None = Field(description="Null when the robot is not in the registry.")
    outcome: OutcomeOut | None = Field(description="Null until an outcome is recorded.")
    telemetry: TelemetrySummary


class ProcedurePage(BaseModel):
    """One page of procedures, newest first (keyset pagination)."""

    items: list[ProcedureOut]
    limit: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    next: str | None = Field(description=NEXT)
