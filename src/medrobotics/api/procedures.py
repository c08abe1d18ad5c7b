"""Procedure endpoints: the list, one procedure, and its telemetry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from medrobotics.api.deps import CallerDep, EngineDep, KeysetLimitDep, invalid, respond
from medrobotics.api.params import (
    Cursor,
    End,
    FilterId,
    PathId,
    Start,
    check_range,
    decode_cursor,
    respond_page,
)
from medrobotics.domain.procedures import (
    Category,
    ProcedureDetail,
    ProcedurePage,
    ProcedureStatus,
)
from medrobotics.domain.telemetry import READINGS, TelemetrySeries
from medrobotics.errors import NotFound
from medrobotics.storage import pages, procedures
from medrobotics.storage.db import read
from medrobotics.web import responses

router = APIRouter(prefix="/api/procedures", tags=["procedures"])

MAX_POINTS = 10_000
"""Most buckets one telemetry series returns: enough for any plot, bounded in size."""


@router.get(
    "",
    response_model=ProcedurePage,
    responses=responses("read"),
)
async def list_procedures(
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    limit: KeysetLimitDep,
    category: Annotated[Category | None, Query()] = None,
    robot_id: Annotated[FilterId | None, Query()] = None,
    facility_id: Annotated[FilterId | None, Query()] = None,
    surgeon_id: Annotated[FilterId | None, Query()] = None,
    status: Annotated[ProcedureStatus | None, Query()] = None,
    start: Start = None,
    end: End = None,
    cursor: Cursor = None,
) -> Any:
    """List procedures newest first, filtered by category, robot, facility, surgeon, status, time.

    The time range applies to `start_time`. Follow `next` (or pass `next_cursor` as `cursor`
    with the same filters) until it is null.
    """
    check_range(start, end)
    after = decode_cursor(cursor)
    rows = await read(
        engine,
        pages.fetch,
        procedures.page(
            category=category,
            robot_id=robot_id,
            facility_id=facility_id,
            surgeon_id=surgeon_id,
            status=status,
            start=start,
            end=end,
            after=after,
            limit=limit,
            phi=caller.phi,
        ),
    )
    return await respond_page(caller, request, rows, limit)


@router.get(
    "/{procedure_id}",
    response_model=ProcedureDetail,
    responses=responses("lookup"),
)
async def get_procedure(procedure_id: PathId, engine: EngineDep, caller: CallerDep) -> Any:
    """Show a procedure with its robot, its outcome and a summary of its telemetry."""
    item = await read(engine, procedures.detail, procedure_id=procedure_id)
    if item is None:
        raise NotFound(f"no procedure {procedure_id!r}")
    return await respond(caller, item)


@router.get(
    "/{procedure_id}/telemetry", response_model=TelemetrySeries, responses=responses("lookup")
)
async def get_telemetry(
    procedure_id: PathId,
    engine: EngineDep,
    start: Start = None,
    end: End = None,
    channels: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Comma-separated channel names; all numeric channels when absent. "
            f"Known: {', '.join(READINGS)}.",
        ),
    ] = None,
    interval_ms: Annotated[
        int | None,
        Query(
            ge=1,
            le=366 * 86_400_000,
            description=f"Bucket width in milliseconds. When absent, the narrowest width giving "
            f"at most {MAX_POINTS} buckets; when given, it must give at most that many.",
        ),
    ] = None,
) -> Any:
    """Return a procedure's samples averaged per time bucket, per channel, for plotting."""
    check_range(start, end)
    names = _channels(channels)
    series = await read(
        engine,
        procedures.telemetry,
        procedure_id=procedure_id,
        channels=names,
        start=start,
        end=end,
        interval_ms=interval_ms,
        max_points=MAX_POINTS,
    )
    if series is None:
        raise NotFound(f"no procedure {procedure_id!r}")
    return series


def _channels(value: str | None) -> list[str]:
    if value is None:
        return list(READINGS)
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in READINGS]
    if unknown or not names:
        raise invalid("channels", f"unknown channel; known: {', '.join(READINGS)}")
    return names
