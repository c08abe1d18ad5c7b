"""Ingestion statistics: totals, recent activity and the lake's lag."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from medrobotics import metrics
from medrobotics.auth import require
from medrobotics.domain.types import UtcDateTime
from medrobotics.ingestion.deps import IngestDep
from medrobotics.storage import archive
from medrobotics.storage import stats as stats_q
from medrobotics.storage.db import read
from medrobotics.web import responses

router = APIRouter()


class Recent(BaseModel):
    """Activity over the last minute and hour (by time received)."""

    samples_last_minute: int
    samples_last_hour: int
    robots_reporting_last_hour: int
    procedures_reporting_last_hour: int
    last_ingest_at: UtcDateTime | None


class ArchiveLag(BaseModel):
    """What committed data still waits for the lake."""

    pending_rows: int = Field(description="Telemetry samples not yet in the lake.")
    lag_seconds: float = Field(description="Age of the oldest sample not yet in the lake.")
    last_archived_at: UtcDateTime | None = Field(
        None, description="When the archiver last moved its mark."
    )
    archived_through: UtcDateTime | None = Field(
        None, description="Every sample received before this time is in the lake."
    )
    pending_batches: int = Field(description="Batch payloads not yet in the lake.")


class IngestStats(BaseModel):
    """Ingestion statistics across every task (computed from the database)."""

    totals: dict[str, int] = Field(description="Rows stored per entity.")
    telemetry_total_estimated: bool = Field(
        description="True when the telemetry total is the planner's estimate (very large tables)."
    )
    recent: Recent
    archive: ArchiveLag | None = Field(None, description="Lake export lag.")
    generated_at: UtcDateTime


@router.get(
    "/ingest/stats",
    response_model=IngestStats,
    responses=responses("report"),
    summary="Ingestion statistics",
    dependencies=[Depends(require("ingest:write", "api:read"))],
)
async def ingest_stats(ingest: IngestDep) -> IngestStats:
    """Report totals per entity, recent activity and (with the lake) archive lag."""
    totals, estimated, recent, lag = await read(ingest.engine, _figures)
    metrics.archive_lag(seconds=lag["lag_seconds"], rows=lag["pending_rows"])
    return IngestStats(
        totals=totals,
        telemetry_total_estimated=estimated,
        recent=Recent(**recent),
        archive=ArchiveLag(**lag),
        generated_at=datetime.now().astimezone(),
    )


def _figures(conn: Connection) -> tuple[dict[str, int], bool, dict[str, Any], dict[str, Any]]:
    totals, estimated = stats_q.totals(conn)
    return totals, estimated, stats_q.recent(conn), archive.lag(conn)
