"""What both services share on the web side: errors, request ids, access logs, health."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import date, datetime
from typing import Any, Literal

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medrobotics import __version__, logs, metrics
from medrobotics.config import Settings
from medrobotics.domain.types import iso
from medrobotics.errors import DomainError, RateLimited, Unauthorized, Unavailable
from medrobotics.storage.db import read

log = logs.get("medrobotics.web")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Error bodies name what was wrong without growing with what was sent: a field name is the
# client's own key (an unknown one can be megabytes), so names, messages and the list are cut.
MAX_DETAILS = 1000  # enough to fix a file
FIELD_CHARS = 100
MESSAGE_CHARS = 300
TRUNCATED = "…(truncated)"


# FastAPI's built-in OpenTelemetry instrumentation, with no exporter configured, would cost
# every request a tracer lookup for nothing: this platform's telemetry is its structured logs,
# Prometheus metrics and CloudWatch EMF (see docs/operations.md).
NO_OTEL: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


class ErrorDetail(BaseModel):
    """One problem with the input: where it is and what is wrong (never the value itself)."""

    field: str
    message: str
    index: int | None = None


class ErrorInfo(BaseModel):
    """The error itself."""

    code: str
    message: str
    details: list[ErrorDetail] = []
    request_id: str | None = None


class ErrorBody(BaseModel):
    """The one shape of every 4xx and 5xx answer."""

    error: ErrorInfo


class Health(BaseModel):
    """Liveness and readiness."""

    status: str
    service: str
    version: str
    database: str | None = None


TIMES = (
    "Times (`format: date-time`) are RFC 3339; one without an offset is taken as UTC, and every "
    "time returned is UTC with an explicit offset. Also accepted, for older clients: seconds "
    'since the Unix epoch written as a string (`"1700000000"`), and in query parameters a date '
    "alone (its midnight UTC)."
)
"""What both documents say of times, beside each time's `format: date-time`."""

ERRORS: dict[int, str] = {
    400: "The body cannot be read: not valid JSON, or broken gzip",
    401: "No valid API key (only where authentication is required: every deployment)",
    403: "The API key lacks the scope this operation needs",
    404: "No such record",
    409: "The write contradicts stored data (`details` names the field)",
    413: "The body (after gzip) or the number of records is over its limit",
    415: "Content-Type or Content-Encoding not taken by this operation",
    422: "Invalid parameter or field; `details` names each",
    429: "Rate limit of the API key exceeded; retry after `Retry-After` seconds",
    500: "Internal error; quote the request id (`X-Request-ID`) to find the log line",
    503: "Database unavailable; retry after `Retry-After` seconds",
}
"""Every error status the services answer, each with the one error body."""

Operation = Literal["liveness", "readiness", "read", "lookup", "report", "write"]

OPERATIONS: dict[Operation, tuple[int, ...]] = {
    "liveness": (500,),  # answered by the process alone
    "readiness": (500, 503),  # 503 carries the Health report, not an error body
    "read": (401, 403, 422, 429, 500, 503),  # a guarded query with parameters
    "lookup": (401, 403, 404, 422, 429, 500, 503),  # the same, of one record by id
    "report": (401, 403, 429, 500, 503),  # guarded, without parameters
    "write": (400, 401, 403, 409, 413, 415, 422, 429, 500, 503),  # a request body in
}
"""The error statuses each kind of operation can answer."""

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: send the key as `Authorization: Bearer <key>`.",
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def responses(kind: Operation) -> dict[int | str, dict[str, Any]]:
    """Return the documented error responses of an operation of `kind` (for `responses=`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in OPERATIONS[kind]:
        doc: dict[str, Any] = {"model": ErrorBody, "description": ERRORS[status]}
        if kind == "readiness" and status == 503:
            doc = {"model": Health, "description": "The database does not answer"}
        if status in _HEADERS:
            doc["headers"] = _HEADERS[status]
        out[status] = doc
    return out


class ORJSONResponse(JSONResponse):
    """JSON through orjson: several times faster than the standard encoder on big pages."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def dumps(content: Any) -> bytes:
    """Return `content` as the JSON every answer is written in."""
    return orjson.dumps(content, default=_encode, option=_OPTIONS)


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _encode(value: Any) -> Any:
    # Times as the database writes them into the pages it builds (see domain.types.iso).
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def error_response(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build the common error body."""
    rid = request.scope.get("request_id") if request is not None else None
    body = error_body(code, message, details, rid)
    response = ORJSONResponse(body, status_code=status, headers=headers)
    if rid is not None:
        # 500s are answered outside the request middleware: set the header here too.
        response.headers["x-request-id"] = rid
    return response


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None, request_id: str | None
) -> dict[str, Any]:
    """Return the one error body shape."""
    error = {"code": code, "message": message, "details": details or [], "request_id": request_id}
    return {"error": error}


def field_errors(
    exc: ValidationError | RequestValidationError, *, base: int = 0
) -> list[dict[str, Any]]:
    """Turn pydantic errors into details that name field and record, never echo the input.

    At most MAX_DETAILS of them, each field path and message cut to a short, marked excerpt.
    """
    out: list[dict[str, Any]] = []
    for err in exc.errors()[:MAX_DETAILS]:
        loc = [p for p in err["loc"] if p not in ("body", "query", "path", "header")]
        index = None
        if loc and isinstance(loc[0], int):
            index = loc[0] + base
            loc = loc[1:]
        out.append(detail(field_path(loc) or "body", str(err["msg"]), index))
    return out


def field_path(loc: Sequence[Any]) -> str:
    """Return a field's dotted path, cut to FIELD_CHARS (its parts may be the client's keys)."""
    # Each part cut first: the join of a megabyte key is never built.
    return clip(".".join(clip(str(p), FIELD_CHARS) for p in loc), FIELD_CHARS)


def detail(field: str, message: str, index: int | None) -> dict[str, Any]:
    """Return one error detail, its field and message bounded."""
    message = clip(message.removeprefix("Value error, "), MESSAGE_CHARS)
    return {"field": clip(field, FIELD_CHARS), "message": message, "index": index}


def clip(text: str, most: int) -> str:
    """Return `text` if at most `most` characters long, else its start marked as cut."""
    return text if len(text) <= most else text[:most] + TRUNCATED


INTERNAL = "internal error; quote the request id to find the log line"
"""The message of every 500: what went wrong is in the log line, never in the answer."""


def error_headers(exc: DomainError) -> dict[str, str] | None:
    """Return the headers that go with `exc`'s answer: when to retry, how to authenticate."""
    if isinstance(exc, (Unavailable, RateLimited)):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return None


def crashed(exc: BaseException, *, request_id: str | None, route: str | None) -> None:
    """Log an unhandled error with its trace, naming the request (its answer is a bare 500)."""
    log.error(
        "unhandled_error",
        error_type=type(exc).__name__,
        request_id=request_id,
        route=route,
        exc_info=exc,
    )


def install_errors(app: FastAPI) -> None:
    """Map every error to the one body shape; nothing leaks exception text or a trace."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        headers = error_headers(exc)
        return error_response(request, exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        details = field_errors(exc)
        names = ", ".join(sorted({d["field"] for d in details})[:10])
        return error_response(request, 422, "invalid", f"invalid parameter: {names}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        message = "no such path" if exc.status_code == 404 else str(exc.detail)
        return error_response(request, exc.status_code, code, message, None, exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        # Runs outside RequestContext (Starlette's outermost layer): name the request here.
        route = getattr(request.scope.get("route"), "path", None)
        crashed(exc, request_id=request.scope.get("request_id"), route=route)
        return error_response(request, 500, "internal", INTERNAL)


class RequestContext:
    """Pure ASGI middleware: request id, trace id, and one access log line per request."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, amzn = _ids(scope["headers"])
        rid = incoming if REQUEST_ID.match(incoming) else os.urandom(16).hex()
        scope["request_id"] = rid
        trace = amzn[:256] or None
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        # Reset to what was bound before (the local platform runs both services in one
        # process): tokens, as structlog's bound_contextvars would restore, without reading
        # the whole context at every request.
        bound = structlog.contextvars.bind_contextvars(
            service=self.service, request_id=rid, trace_id=trace
        )
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe_request(self.service, scope["method"], route, status, elapsed)
            if logs.access_on():
                client = scope.get("client")
                logs.access(
                    service=self.service,
                    request_id=rid,
                    trace_id=trace,
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client=client[0] if client else None,
                )


def _ids(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    # The request's own id and the load balancer's trace id, in one pass over the headers.
    rid = trace = b""
    for name, value in headers:
        if name == b"x-request-id":
            rid = value
        elif name == b"x-amzn-trace-id":
            trace = value
    return rid.decode("latin-1"), trace.decode("latin-1")


async def readiness(engine: Engine, service: str) -> Response:
    """Check the database with one trivial query; 200 when it answers, 503 when not."""
    try:
        await read(engine, _ping)
        state, code = "ok", 200
    except Unavailable:
        state, code = "unavailable", 503
    health = Health(
        status="ok" if code == 200 else "degraded",
        service=service,
        version=__version__,
        database=state,
    )
    headers = {"Retry-After": "5"} if code == 503 else None
    return ORJSONResponse(health.model_dump(), status_code=code, headers=headers)


def _ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


def amend_openapi(app: FastAPI, edit: Callable[[dict[str, Any]], None]) -> None:
    """Have `edit` amend `app`'s OpenAPI document once, when FastAPI first builds it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()  # kept by FastAPI as app.openapi_schema: the edit runs once
        edit(doc)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def install_metrics(app: FastAPI, *, service: str, engine: Engine) -> None:
    """Serve /metrics (not routed by the load balancer) and watch the connection pool."""
    metrics.watch_pool(service, engine)
    app.add_route("/metrics", metrics.scrape, include_in_schema=False)


@asynccontextmanager
async def emf_lines(settings: Settings, service: str) -> AsyncIterator[None]:
    """Print CloudWatch EMF lines while the app runs, when MEDROBOTICS_METRICS=emf."""
    if settings.metrics != "emf":
        yield
        return
    # The archive lag only from an ingestion service that runs the archiver itself.
    lag = service == "data-ingestion" and settings.archive_enabled
    task = asyncio.create_task(
        metrics.emit_emf(service, settings.environment, interval=settings.emf_interval_s, lag=lag)
    )
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def install_health(app: FastAPI, *, service: str, engine: Engine, ready_path: str) -> None:
    """Serve `/health` (liveness) and `ready_path` (readiness: does the database answer)."""

    @app.get(
        "/health",
        response_model=Health,
        summary="Liveness for the load balancer",
        responses=responses("liveness"),
    )
    async def health() -> Health:
        """Answer while the process serves; never touches the database (no thread hop)."""
        return Health(status="ok", service=service, version=__version__)

    @app.get(
        ready_path,
        response_model=Health,
        summary="Readiness: is the database answering",
        responses=responses("readiness"),
    )
    async def ready() -> Response:
        """Report whether the database answers (503 when it does not)."""
        return await readiness(engine, service)
