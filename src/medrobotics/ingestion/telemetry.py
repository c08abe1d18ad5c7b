"""Telemetry samples, one or a few per request, as robots post them by the thousand a second."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from medrobotics import metrics
from medrobotics.domain.telemetry import TelemetryIn, fast_rows
from medrobotics.errors import TooLarge
from medrobotics.ingestion import body, flows
from medrobotics.ingestion.deps import WRITES, Ingest, Stored, stored
from medrobotics.web import responses

router = APIRouter()

_SAMPLE: TypeAdapter[TelemetryIn] = TypeAdapter(TelemetryIn)
_SAMPLES: TypeAdapter[list[TelemetryIn]] = TypeAdapter(list[TelemetryIn])


@router.post(
    "/ingest/telemetry",
    status_code=201,
    response_model=Stored,
    responses=responses("write"),
    summary="Ingest one telemetry sample, or a JSON array of samples",
    dependencies=WRITES,
)
async def ingest_telemetry(request: Request) -> Response:
    """Commit samples; concurrent requests share commits. Re-sent samples are skipped."""
    # The raw body, decoded by msgspec: a FastAPI body parameter would validate it with
    # pydantic, several times the cost of the rest of the request (docs/design.md). The
    # service's parts are read from app.state, not a dependency: each dependency FastAPI
    # solves costs this hot route several percent of its rate.
    ingest: Ingest = request.app.state.ingest
    body.media_type(request, (body.JSON,))
    raw = await body.read(request, limit=ingest.body)
    rows = fast_rows(raw)
    if rows is None:  # not plainly valid: the schema gives the precise answer
        if raw.lstrip()[:1] == b"[":
            rows = [s.row() for s in flows.validate(_SAMPLES, raw)]
        else:
            rows = [flows.validate(_SAMPLE, raw).row()]
    most = ingest.settings.max_batch_records
    if len(rows) > most:
        raise TooLarge(f"more than {most} records in one request")
    await ingest.writer.submit(rows)
    metrics.received("telemetry", len(rows), batch=False)
    return stored("telemetry", len(rows))
