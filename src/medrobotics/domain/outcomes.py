"""Outcome wire schemas."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from medrobotics.domain.types import INPUT, NEXT, Id, LongText, Text, UtcDateTime

SuccessStatus = Literal["successful", "complicated", "failed"]
SUCCESS_STATUSES: tuple[str, ...] = ("successful", "complicated", "failed")


class OutcomeIn(BaseModel):
    """How one procedure ended; at most one per procedure (re-sending updates it)."""

    model_config = INPUT

    procedure_id: Id
    success_status: SuccessStatus
    blood_loss_ml: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    complications: Annotated[list[Text], Field(max_length=50)] = Field(default_factory=list)
    hospital_stay_days: float | None = Field(None, ge=0, le=3650, allow_inf_nan=False)
    readmission_30day: bool = False
    patient_satisfaction_score: float | None = Field(None, ge=1, le=10, allow_inf_nan=False)
    surgeon_notes: LongText | None = None
    recovery_score: float | None = Field(None, ge=1, le=100, allow_inf_nan=False)
    follow_up_required: bool = False


PHI_FIELDS: tuple[str, ...] = ("surgeon_notes",)
_PHI = "Omitted without the phi:read scope."


class OutcomeOut(BaseModel):
    """How one procedure ended, with the procedure's robot, category and start time."""

    procedure_id: str
    robot_id: str
    procedure_category: str
    start_time: UtcDateTime = Field(description="The procedure's start.")
    success_status: SuccessStatus
    blood_loss_ml: float | None
    complications: list[str]
    hospital_stay_days: float | None
    readmission_30day: bool
    patient_satisfaction_score: float | None
    surgeon_notes: str | None = Field(None, description=_PHI)
    recovery_score: float | None
    follow_up_required: bool
    created_at: UtcDateTime
    updated_at: UtcDateTime


class OutcomePage(BaseModel):
    """One page of outcomes, newest procedure first (keyset pagination)."""

    items: list[OutcomeOut]
    limit: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    next: str | None = Field(description=NEXT)
