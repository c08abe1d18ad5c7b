"""Outcome endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from medrobotics.api.deps import CallerDep, EngineDep, KeysetLimitDep
from medrobotics.api.params import (
    Cursor,
    End,
    Start,
    check_range,
    decode_cursor,
    respond_page,
)
from medrobotics.domain.outcomes import OutcomePage, SuccessStatus
from medrobotics.domain.procedures import Category
from medrobotics.storage import outcomes, pages
from medrobotics.storage.db import read
from medrobotics.web import responses

router = APIRouter(prefix="/api/outcomes", tags=["outcomes"])


@router.get(
    "",
    response_model=OutcomePage,
    responses=responses("read"),
)
async def list_outcomes(
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    limit: KeysetLimitDep,
    success_status: Annotated[SuccessStatus | None, Query()] = None,
    category: Annotated[Category | None, Query()] = None,
    readmission: Annotated[
        bool | None, Query(description="Readmitted within 30 days (true or false).")
    ] = None,
    start: Start = None,
    end: End = None,
    cursor: Cursor = None,
) -> Any:
    """List outcomes newest procedure first, by success, category, readmission and time.

    The time range applies to the procedure's `start_time`. Follow `next` until it is null.
    """
    check_range(start, end)
    after = decode_cursor(cursor)
    rows = await read(
        engine,
        pages.fetch,
        outcomes.page(
            success_status=success_status,
            category=category,
            readmission=readmission,
            start=start,
            end=end,
            after=after,
            limit=limit,
            phi=caller.phi,
        ),
    )
    return await respond_page(caller, request, rows, limit)
