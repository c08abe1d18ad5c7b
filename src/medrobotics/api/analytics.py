"""Analytics endpoints: utilization, outcomes, volumes and maintenance, computed in SQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from medrobotics.api.caching import RESPONSES, cached
from medrobotics.api.deps import EngineDep
from medrobotics.api.params import End, FilterId, Start, window
from medrobotics.domain.analytics import (
    Interval,
    MaintenanceCosts,
    OutcomesSummary,
    ProceduresByCategory,
    ProcedureVolume,
    Utilization,
)
from medrobotics.domain.procedures import Category
from medrobotics.domain.units import HOURS, rounded
from medrobotics.storage import analytics
from medrobotics.storage.db import reading
from medrobotics.web import responses

router = APIRouter(
    prefix="/api/analytics", tags=["analytics"], responses=responses("read") | RESPONSES
)


def _days(default: int) -> Any:
    return Query(
        ge=1,
        le=3650,
        description=f"Window length ending now (default {default}); `start` and `end` override it.",
    )


def _window(start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "hours": rounded((end - start).total_seconds() / 3600, HOURS),
    }


@router.get("/robot-utilization", response_model=Utilization)
@cached
def robot_utilization(
    engine: EngineDep,
    days: Annotated[int, _days(365)] = 365,
    start: Start = None,
    end: End = None,
    facility_id: Annotated[FilterId | None, Query()] = None,
) -> Any:
    """Report procedures, hours in use, share of time and last use per robot and facility."""
    lo, hi = window(days, start, end)
    with analytics.snapshot(engine) as conn:
        result = analytics.utilization(conn, start=lo, end=hi, facility_id=facility_id)
    return {"window": _window(lo, hi), **result}


@router.get("/outcomes-summary", response_model=OutcomesSummary)
@cached
def outcomes_summary(
    engine: EngineDep,
    days: Annotated[int, _days(365)] = 365,
    start: Start = None,
    end: End = None,
) -> Any:
    """Report outcome counts, rates and means, per success status and per category."""
    lo, hi = window(days, start, end)
    with analytics.snapshot(engine) as conn:
        result = analytics.outcomes_summary(conn, start=lo, end=hi)
    return {"window": _window(lo, hi), **result}


@router.get("/procedures-by-category", response_model=ProceduresByCategory)
@cached
def procedures_by_category(
    engine: EngineDep,
    days: Annotated[int, _days(30)] = 30,
    start: Start = None,
    end: End = None,
) -> Any:
    """Count procedures per category over the last N days, by status, with mean duration."""
    lo, hi = window(days, start, end)
    with analytics.snapshot(engine) as conn:
        rows = analytics.procedures_by_category(conn, start=lo, end=hi)
    return {"window": _window(lo, hi), "categories": rows}


@router.get("/procedure-volume", response_model=ProcedureVolume)
@cached
def procedure_volume(
    engine: EngineDep,
    interval: Annotated[Interval, Query(description="Bucket: UTC day, week or month.")] = "day",
    days: Annotated[int, _days(90)] = 90,
    start: Start = None,
    end: End = None,
    category: Annotated[Category | None, Query()] = None,
    robot_id: Annotated[FilterId | None, Query()] = None,
) -> Any:
    """Report procedure count and duration per day, week or month."""
    lo, hi = window(days, start, end)
    with analytics.snapshot(engine) as conn:
        buckets = analytics.procedure_volume(
            conn, start=lo, end=hi, interval=interval, category=category, robot_id=robot_id
        )
    return {"window": _window(lo, hi), "interval": interval, "buckets": buckets}


@router.get("/maintenance-costs", response_model=MaintenanceCosts)
@cached
def maintenance_costs(
    engine: EngineDep,
    days: Annotated[int, _days(365)] = 365,
    start: Start = None,
    end: End = None,
    facility_id: Annotated[FilterId | None, Query()] = None,
) -> Any:
    """Report maintenance visits, cost and downtime per robot.

    A visit counts when its date (as midnight UTC) falls in the window.
    """
    lo, hi = window(days, start, end)
    with reading(engine) as conn:
        result = analytics.maintenance_costs(
            conn,
            first_day=_first_day(lo),
            last_day=_first_day(hi) - timedelta(days=1),
            facility_id=facility_id,
        )
    return {"window": _window(lo, hi), **result}


def _first_day(moment: datetime) -> date:
    """Return the first date whose midnight is at or after `moment`."""
    day = moment.date()
    return day if moment.time() == datetime.min.time() else day + timedelta(days=1)
