"""Analytics wire schemas: fleet utilization, outcomes, volumes, maintenance."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from medrobotics.domain.types import Day, UtcDateTime

Interval = Literal["day", "week", "month"]


class Window(BaseModel):
    """The time range an answer covers: `[start, end)`.

    Every sum and mean in an analytics answer is rounded to its unit's precision: USD to the
    cent, hours to 3 decimals, minutes, days and scores to 2, millilitres to 1, shares and
    rates (fractions) to 4.
    """

    start: UtcDateTime
    end: UtcDateTime
    hours: float


class RobotUtilization(BaseModel):
    """One robot's use over the window."""

    robot_id: str
    robot_model: str
    facility_id: str
    facility_name: str | None
    status: str
    procedures: int = Field(description="Procedures started in the window, cancelled excluded.")
    hours_in_use: float = Field(description="Sum of those procedures' durations, in hours.")
    utilization: float = Field(
        description="Share of available time: hours in use / hours in the window (0..1+)."
    )
    last_used_at: UtcDateTime | None = Field(
        description="Start of the robot's latest procedure, at any time (cancelled excluded)."
    )


class FacilityUtilization(BaseModel):
    """One facility's robots together over the window."""

    facility_id: str
    facility_name: str | None
    robots: int
    procedures: int
    hours_in_use: float
    utilization: float = Field(
        description="Hours in use / (robots x hours in the window): the fleet's mean share."
    )
    last_used_at: UtcDateTime | None


class Utilization(BaseModel):
    """Robot use per robot and per facility (robots in the registry only).

    A procedure counts in the window its start falls in; its hours are its recorded
    `duration_minutes` (derived from start and end at ingestion; 0 while in progress).
    """

    window: Window
    robots: list[RobotUtilization]
    facilities: list[FacilityUtilization]


class OutcomeStats(BaseModel):
    """Outcome figures for one group of procedures."""

    outcomes: int
    successful: int
    complicated: int
    failed: int
    complication_rate: float | None = Field(
        description="Share of outcomes listing at least one complication."
    )
    readmission_rate: float | None = Field(description="Share readmitted within 30 days.")
    mean_blood_loss_ml: float | None
    mean_hospital_stay_days: float | None
    mean_patient_satisfaction: float | None


class OutcomeStatusGroup(OutcomeStats):
    """Outcome figures for one success status."""

    success_status: str


class OutcomeCategoryGroup(OutcomeStats):
    """Outcome figures for one procedure category."""

    procedure_category: str


class OutcomesSummary(BaseModel):
    """Outcomes of procedures started in the window, overall, by status and by category."""

    window: Window
    overall: OutcomeStats
    by_success_status: list[OutcomeStatusGroup]
    by_category: list[OutcomeCategoryGroup]


class CategoryVolume(BaseModel):
    """One procedure category over the window."""

    procedure_category: str
    procedures: int
    completed: int
    in_progress: int
    aborted: int
    cancelled: int
    mean_duration_minutes: float | None
    mean_complexity: float | None


class ProceduresByCategory(BaseModel):
    """Procedures started in the window, per category (every category listed)."""

    window: Window
    categories: list[CategoryVolume]


class VolumeBucket(BaseModel):
    """Procedures started in one day, week (from Monday) or month, UTC."""

    bucket_start: UtcDateTime
    procedures: int
    total_duration_minutes: float
    mean_duration_minutes: float | None


class ProcedureVolume(BaseModel):
    """Procedure volume and duration over time; buckets without procedures are left out."""

    window: Window
    interval: Interval
    buckets: list[VolumeBucket]


class RobotMaintenance(BaseModel):
    """One robot's maintenance over the window."""

    robot_id: str
    robot_model: str
    facility_id: str
    visits: int
    emergency_visits: int
    total_cost: float = Field(description="USD.")
    downtime_hours: float
    last_maintenance_date: Day | None = Field(description="Latest visit in the window.")


class MaintenanceCosts(BaseModel):
    """Maintenance cost and downtime per robot (every robot in the registry), costliest first."""

    window: Window
    total_cost: float
    downtime_hours: float
    robots: list[RobotMaintenance]
