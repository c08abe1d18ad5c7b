"""What the ingestion routes share: the service's parts, the caller check, the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from medrobotics.auth import require
from medrobotics.config import Settings
from medrobotics.ingestion.body import Limits
from medrobotics.ingestion.flows import Entity
from medrobotics.ingestion.writer import GroupWriter
from medrobotics.web import ORJSONResponse

WRITES = [Depends(require("ingest:write"))]
"""The caller check of every write route."""


@dataclass(frozen=True, slots=True)
class Ingest:
    """The service's parts, built once by create_app and kept on app.state."""

    settings: Settings
    engine: Engine
    writer: GroupWriter
    body: Limits
    """Limits of a JSON body."""
    stream: Limits
    """Limits of an NDJSON stream."""


async def get_ingest(request: Request) -> Ingest:
    """Return the service's parts (no I/O: async, so no thread hop)."""
    ingest: Ingest = request.app.state.ingest
    return ingest


IngestDep = Annotated[Ingest, Depends(get_ingest)]


class Stored(BaseModel):
    """What was committed. A 2xx answer means the records are durable in the database."""

    entity: Entity
    received: int = Field(description="Records in this request.")
    written: int | None = Field(
        None,
        description="Records new or changed by this request: a record equal to the one "
        "stored (in the fields it carries) is left alone and not counted; telemetry counts new "
        "samples only (a re-sent sample is skipped). Absent when the write was shared with "
        "other requests.",
    )
    duplicates: int | None = Field(None, description="Telemetry samples already stored.")


def stored(
    entity: str, received: int, written: int | None = None, duplicates: int | None = None
) -> ORJSONResponse:
    """Answer 201 with the Stored schema, serialized directly (no model round trip)."""
    body = {"entity": entity, "received": received, "written": written, "duplicates": duplicates}
    return ORJSONResponse(body, status_code=201)


def result(entity: str, received: int, written: int) -> ORJSONResponse:
    """Answer a committed batch (telemetry counts the samples already stored)."""
    dup = received - written if entity == "telemetry" else None
    return stored(entity, received, written, dup)
