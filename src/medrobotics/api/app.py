"""The query API service: robots, procedures, outcomes, telemetry and analytics."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import Engine

from medrobotics import __version__
from medrobotics.api import analytics, outcomes, procedures, robots
from medrobotics.config import Settings
from medrobotics.storage.db import make_engine
from medrobotics.web import (
    Health,
    ORJSONResponse,
    RequestContext,
    install_errors,
    readiness,
)

SERVICE = "api-service"


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the query API service for `settings`."""
    engine = engine or make_engine(settings.db_url, pool_size=settings.db_pool_size)
    app = FastAPI(
        title="medrobotics query API",
        version=__version__,
        description="Robots, procedures, outcomes, telemetry and analytics of the fleet. "
        "Times are UTC with an explicit offset; identifiers are strings; every error has the "
        "same body.",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        openapi_url="/api/openapi.json",
        default_response_class=ORJSONResponse,
    )
    app.state.engine = engine
    app.state.settings = settings
    install_errors(app)
    app.add_middleware(RequestContext, service=SERVICE)
    for module in (robots, procedures, outcomes, analytics):
        app.include_router(module.router)

    @app.get("/health", response_model=Health, summary="Liveness for the load balancer")
    async def health() -> Health:
        """Answer while the process serves; never touches the database (no thread hop)."""
        return Health(status="ok", service=SERVICE, version=__version__)

    @app.get(
        "/api/health",
        response_model=Health,
        summary="Readiness: is the database answering",
        responses={503: {"model": Health}},
    )
    def ready() -> Response:
        """Report whether the database answers (503 when it does not)."""
        return readiness(engine, SERVICE)

    return app
