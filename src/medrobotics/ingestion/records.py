"""Procedures, outcomes, robots and maintenance visits, one record per request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.ingestion import body, flows
from medrobotics.ingestion.deps import WRITES, Ingest, IngestDep, Stored, stored
from medrobotics.ingestion.flows import Entity
from medrobotics.web import responses

router = APIRouter()


def _route(what: str) -> dict[str, Any]:
    return {
        "status_code": 201,
        "response_model": Stored,
        "responses": responses("write"),
        "summary": f"Ingest one {what}",
        "dependencies": WRITES,
    }


async def _one(
    request: Request, ingest: Ingest, entity: Entity, adapter: TypeAdapter[Any]
) -> Response:
    body.media_type(request, (body.JSON,))
    raw = await body.read(request, limit=ingest.body)
    item = flows.validate(adapter, raw)
    written = await flows.store(ingest.engine, entity, [item])
    return stored(entity, 1, written)


_PROCEDURE: TypeAdapter[ProcedureIn] = TypeAdapter(ProcedureIn)
_OUTCOME: TypeAdapter[OutcomeIn] = TypeAdapter(OutcomeIn)
_ROBOT: TypeAdapter[RobotIn] = TypeAdapter(RobotIn)
_MAINTENANCE: TypeAdapter[MaintenanceIn] = TypeAdapter(MaintenanceIn)


@router.post("/ingest/procedure", **_route("procedure"))
async def ingest_procedures(request: Request, ingest: IngestDep) -> Response:
    """Insert or update one procedure (same id: the fields sent are updated)."""
    return await _one(request, ingest, "procedures", _PROCEDURE)


@router.post("/ingest/outcome", **_route("outcome"))
async def ingest_outcomes(request: Request, ingest: IngestDep) -> Response:
    """Insert or update one outcome (same id: the fields sent are updated)."""
    return await _one(request, ingest, "outcomes", _OUTCOME)


@router.post("/ingest/robot", **_route("robot"))
async def ingest_robots(request: Request, ingest: IngestDep) -> Response:
    """Insert or update one robot (same id: the fields sent are updated)."""
    return await _one(request, ingest, "robots", _ROBOT)


@router.post("/ingest/maintenance", **_route("maintenance visit"))
async def ingest_maintenance(request: Request, ingest: IngestDep) -> Response:
    """Insert or update one maintenance visit (same id: the fields sent are updated)."""
    return await _one(request, ingest, "maintenance", _MAINTENANCE)
