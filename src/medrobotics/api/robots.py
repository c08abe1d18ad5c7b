"""Robot endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from medrobotics.api.deps import EngineDep, LimitDep
from medrobotics.api.params import FilterId, FilterText, PathId, offset_page, query_of
from medrobotics.domain.robots import RobotDetail, RobotPage, RobotStatus
from medrobotics.errors import NotFound
from medrobotics.storage import pages, robots
from medrobotics.storage.db import read
from medrobotics.web import ORJSONResponse, responses

router = APIRouter(prefix="/api/robots", tags=["robots"])


@router.get("", response_model=RobotPage, responses=responses("read"))
async def list_robots(
    request: Request,
    engine: EngineDep,
    limit: LimitDep,
    facility_id: Annotated[FilterId | None, Query()] = None,
    status: Annotated[RobotStatus | None, Query()] = None,
    model: Annotated[FilterText | None, Query(description="Exact robot_model.")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    """List robots by id, filtered by facility, status and model."""
    query = robots.page(
        facility_id=facility_id, status=status, model=model, limit=limit, offset=offset
    )
    rows = await read(engine, pages.fetch, query)
    page = offset_page(*query_of(request), rows, limit, offset)
    return ORJSONResponse(page)  # robots carry no patient data; see deps.respond


@router.get("/{robot_id}", response_model=RobotDetail, responses=responses("lookup"))
async def get_robot(robot_id: PathId, engine: EngineDep) -> Any:
    """Show a robot with its procedure count, last procedure and maintenance summary."""
    robot = await read(engine, robots.detail, robot_id=robot_id)
    if robot is None:
        raise NotFound(f"no robot {robot_id!r}")
    return robot
