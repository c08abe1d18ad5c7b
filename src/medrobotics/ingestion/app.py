"""The data ingestion service: telemetry, procedures and batches in; statistics out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from medrobotics import __version__
from medrobotics.auth import Guard, document_keys
from medrobotics.config import Settings
from medrobotics.domain.types import use_time_window
from medrobotics.ingestion import batches, records, stats, telemetry
from medrobotics.ingestion.body import Limits
from medrobotics.ingestion.deps import Ingest
from medrobotics.ingestion.openapi import document_bodies
from medrobotics.ingestion.writer import GroupWriter
from medrobotics.storage import archive
from medrobotics.storage.db import make_engine
from medrobotics.storage.lake import open_lake
from medrobotics.ui.docs import install_docs
from medrobotics.web import (
    NO_OTEL,
    TIMES,
    ORJSONResponse,
    RequestContext,
    emf_lines,
    install_errors,
    install_health,
    install_metrics,
)

SERVICE = "data-ingestion"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the group writer (and the archiver, when on) while the service serves."""
    ingest: Ingest = app.state.ingest
    settings, engine = ingest.settings, ingest.engine
    ingest.writer.start()
    stop = asyncio.Event()
    archiver = None
    if settings.archive_enabled:
        archiver = asyncio.get_running_loop().create_task(
            archive.run_forever(engine, open_lake(settings), settings, stop),
            name="lake-archiver",
        )
    try:
        async with emf_lines(settings, SERVICE):
            yield
    finally:
        # In-flight requests have finished by now; flush whatever they queued.
        await ingest.writer.close()
        stop.set()
        if archiver is not None:
            # Lets a window in progress finish (bounded by the lake client's timeouts).
            await archiver


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the ingestion service for `settings`."""
    use_time_window(settings.time_window)  # what every sample and event time is checked against
    engine = engine or make_engine(
        settings.db_url, pool_size=settings.db_pool_size, pool_timeout=settings.db_pool_timeout_s
    )
    app = FastAPI(
        title="medrobotics data ingestion",
        version=__version__,
        description="Receives telemetry, procedures, outcomes, robots and maintenance records. "
        "Every error has the same body. " + TIMES,
        docs_url=None,  # served from the package: install_docs
        redoc_url=None,
        openapi_url="/ingest/openapi.json",
        default_response_class=ORJSONResponse,
        telemetry=NO_OTEL,
        lifespan=lifespan,
    )
    app.state.ingest = Ingest(
        settings=settings,
        engine=engine,
        writer=GroupWriter(engine),
        body=Limits.of(settings, size=settings.max_body_bytes),
        stream=Limits.of(settings, size=settings.max_stream_bytes),
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.guard = Guard(engine, settings)
    install_errors(app)
    install_metrics(app, service=SERVICE, engine=engine)
    app.add_middleware(RequestContext, service=SERVICE)
    for module in (telemetry, records, batches, stats):
        app.include_router(module.router)

    install_health(app, service=SERVICE, engine=engine, ready_path="/ingest/health")
    document_bodies(app, settings)
    document_keys(app)
    install_docs(app, prefix="/ingest")

    return app
