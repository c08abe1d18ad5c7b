"""The query API service: robots, procedures, outcomes, telemetry and analytics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from medrobotics import __version__
from medrobotics.api import analytics, outcomes, procedures, robots
from medrobotics.api.caching import AnswerCache
from medrobotics.api.deps import document_page_size
from medrobotics.auth import Guard, document_keys, require
from medrobotics.config import Settings
from medrobotics.storage.db import make_engine
from medrobotics.ui.dashboard import install_dashboard
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

SERVICE = "api-service"


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the query API service for `settings`."""
    engine = engine or make_engine(
        settings.db_url, pool_size=settings.db_pool_size, pool_timeout=settings.db_pool_timeout_s
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with emf_lines(settings, SERVICE):
            yield

    app = FastAPI(
        title="medrobotics query API",
        version=__version__,
        description="Robots, procedures, outcomes, telemetry and analytics of the fleet. "
        "Identifiers are strings; every error has the same body. " + TIMES,
        docs_url=None,  # served from the package below: install_docs
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=ORJSONResponse,
        telemetry=NO_OTEL,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.guard = Guard(engine, settings)
    app.state.answers = AnswerCache(settings.analytics_cache_seconds)
    install_errors(app)
    install_metrics(app, service=SERVICE, engine=engine)
    app.add_middleware(RequestContext, service=SERVICE)
    for module in (robots, procedures, outcomes, analytics):
        app.include_router(module.router, dependencies=[Depends(require("api:read"))])

    install_health(app, service=SERVICE, engine=engine, ready_path="/api/health")
    document_page_size(app, settings)
    document_keys(app)
    install_docs(app, prefix="/api")
    install_dashboard(app)

    return app
