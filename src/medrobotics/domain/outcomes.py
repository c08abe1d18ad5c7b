"""Outcome wire schemas."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from medrobotics.domain.types import INPUT, Id, LongText, Text

SuccessStatus = Literal["successful", "complicated", "failed"]
SUCCESS_STATUSES: tuple[str, ...] = ("successful", "complicated", "failed")


class OutcomeIn(BaseModel):
    """How one procedure ended; at most one per procedure (re-sending updates it)."""

    model_config = INPUT

    procedure_id: Id
    success_status: SuccessStatus
    blood_loss_ml: float | None = Field(None, ge=0, allow_inf_nan=False)
    complications: Annotated[list[Text], Field(max_length=50)] = Field(default_factory=list)
    hospital_stay_days: float | None = Field(None, ge=0, le=3650, allow_inf_nan=False)
    readmission_30day: bool = False
    patient_satisfaction_score: float | None = Field(None, ge=1, le=10, allow_inf_nan=False)
    surgeon_notes: LongText | None = None
    recovery_score: float | None = Field(None, ge=1, le=100, allow_inf_nan=False)
    follow_up_required: bool = False
