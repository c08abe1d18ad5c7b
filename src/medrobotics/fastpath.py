"""What the raw ASGI paths in front of FastAPI share: the caller, the answer, the access line.

Each service answers its hottest requests below FastAPI (see ingestion.fast and api.fast):
FastAPI's per-request work (middleware, dependency solving, request objects) cost several
times the request's own. A fast path takes only the plain common case and answers exactly what
the FastAPI route answers, with the same metrics and access line; every other request is handed
to the FastAPI app unchanged, which stays the reference and the OpenAPI document's source.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from medrobotics import logs, metrics
from medrobotics.auth import Guard, Principal, key_of
from medrobotics.web import REQUEST_ID

App = Callable[[Scope, Receive, Send], Awaitable[None]]
"""The FastAPI app, as a fast path hands a request to it."""


def headers_of(scope: Scope) -> dict[bytes, bytes] | None:
    """Return the request's headers by (lower-case) name; None when one repeats.

    A repeated header is left to the app, whose rules decide which value counts.
    """
    raw = scope["headers"]
    headers = dict(raw)
    return headers if len(headers) == len(raw) else None


def text(value: bytes | None) -> str | None:
    """Return a header value as text (HTTP headers are Latin-1)."""
    return None if value is None else value.decode("latin-1")


def known_caller(guard: Guard, headers: dict[bytes, bytes]) -> Principal | None:
    """Return the caller when known without I/O (a cached key, or authentication off)."""
    presented = key_of(text(headers.get(b"authorization")), text(headers.get(b"x-api-key")))
    return guard.cached(presented)


class Answer:
    """Sends one route's answers of one status, counted and logged as RequestContext does."""

    def __init__(
        self,
        service: str,
        method: str,
        route: str,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.service, self.method, self.route, self.status = service, method, route, status
        self.headers = headers
        self.answers = metrics.Answers(service, method, route, status)

    async def send(
        self,
        scope: Scope,
        send: Send,
        headers: dict[bytes, bytes],
        body: bytes | Callable[[str], bytes],
        start: float,
    ) -> None:
        """Send `body` (or `body(request_id)`) as JSON with the request id, then record it."""
        incoming = text(headers.get(b"x-request-id")) or ""
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        if callable(body):
            body = body(rid)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    *self.headers,
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - start
        self.answers.observe(elapsed)
        if not logs.access_on():  # the access line would be dropped: skip building it
            return
        trace = (text(headers.get(b"x-amzn-trace-id")) or "")[:256] or None
        client = scope.get("client")
        logs.access(
            service=self.service,
            request_id=rid,
            trace_id=trace,
            method=self.method,
            route=self.route,
            status=self.status,
            duration_ms=round(elapsed * 1000, 2),
            client=client[0] if client else None,
        )
