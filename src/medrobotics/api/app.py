"""The query API service: robots, procedures, outcomes, telemetry and analytics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from medrobotics import __version__
from medrobotics.api import analytics, fast, outcomes, procedures, robots
from medrobotics.api.caching import AnswerCache
from medrobotics.api.deps import document_page_size
from medrobotics.auth import Guard, require
from medrobotics.config import Settings
from medrobotics.storage.db import Reader, make_engine, make_pool
from medrobotics.ui.dashboard import install_dashboard
from medrobotics.ui.docs import install_docs
from medrobotics.web import (
    NO_OTEL,
    TIMES,
    ORJSONResponse,
    RequestContext,
    cap_threads,
    emf_lines,
    install_errors,
    install_health,
    install_metrics,
)

SERVICE = "api-service"


class ApiApp(FastAPI):
    """The FastAPI app, behind the fast path for plain list and detail reads (see api.fast)."""

    fast: fast.FastReads | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reads = self.fast
        if reads is not None and scope["type"] == "http" and fast.taken(scope):
            await reads(scope, receive, send, super().__call__)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the query API service for `settings`."""
    engine = engine or make_engine(settings.db_url, pool_size=settings.db_pool_size)
    pool = make_pool(engine, size=settings.db_pool_size)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        cap_threads(settings)
        if pool is not None:
            # Not waiting for the first connection: a database that is down must not keep the
            # service from starting (it answers 503 until the database is back).
            await pool.open(wait=False)
        try:
            async with emf_lines(settings, SERVICE):
                yield
        finally:
            if pool is not None:
                await pool.close()

    app = ApiApp(
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
    app.state.reader = reader = Reader(engine, pool)
    app.state.settings = settings
    app.state.guard = guard = Guard(engine, settings)
    app.state.answers = AnswerCache(settings.analytics_cache_seconds)
    app.fast = fast.FastReads(service=SERVICE, settings=settings, guard=guard, reader=reader)
    install_errors(app)
    install_metrics(app, service=SERVICE, engine=engine)
    app.add_middleware(RequestContext, service=SERVICE)
    for module in (robots, procedures, outcomes, analytics):
        app.include_router(module.router, dependencies=[Depends(require("api:read"))])

    install_health(app, service=SERVICE, engine=engine, ready_path="/api/health")
    document_page_size(app, settings)
    install_docs(app, prefix="/api")
    install_dashboard(app)

    return app
