"""What the raw ASGI paths in front of FastAPI share: the caller, the answer, the access line.

Each service answers its hottest requests below FastAPI (see ingestion.fast and api.fast):
FastAPI's per-request work (middleware, dependency solving, request objects) cost several
times the request's own. A fast path takes only the plain common case and answers exactly what
the FastAPI route answers, with the same metrics and access line; every other request is handed
to the FastAPI app unchanged, which stays the reference and the OpenAPI document's source.
An error raised inside a fast path is answered there, as the app's error handlers would answer
it: the error body with its request id, the access line and the request metric, a 500 logged
with its trace. A request is never handed to the app after the fast path tried it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from medrobotics import logs, metrics
from medrobotics.auth import Guard, Principal, key_of
from medrobotics.errors import DomainError
from medrobotics.web import INTERNAL, REQUEST_ID, crashed, dumps, error_body, error_headers

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


def request_id(headers: dict[bytes, bytes]) -> str:
    """Return the caller's request id when usable, else a new one (as RequestContext does)."""
    incoming = text(headers.get(b"x-request-id")) or ""
    return incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex


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
        rid: str | None = None,
    ) -> None:
        """Send `body` (or `body(request_id)`) as JSON with the request id, then record it."""
        if rid is None:
            rid = request_id(headers)
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


class FastPath:
    """A raw path in front of an app; whatever error `serve` raises gets the app's answer."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.taken = 0
        """Requests answered here, errors included (the rest went to the app)."""
        self._errors: dict[tuple[str, int, tuple[tuple[bytes, bytes], ...]], Answer] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        start = time.perf_counter()
        sending = _Sending(send)
        try:
            await self.serve(scope, receive, sending, app, start)
        except Exception as exc:
            if sending.started:  # the app's answer, or ours, is on its way: nothing to add
                raise
            await self.fail(scope, send, exc, start)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, app: App, start: float
    ) -> None:
        """Answer the request, or hand it to `app`; raise to have an error answered."""
        raise NotImplementedError

    def route(self, scope: Scope) -> str:
        """Return the route template the request counts under."""
        raise NotImplementedError

    async def fail(self, scope: Scope, send: Send, exc: Exception, start: float) -> None:
        """Answer `exc` as web.install_errors does, with the access line and the metric."""
        headers = dict(scope["headers"])
        rid = request_id(headers)
        route = self.route(scope)
        if isinstance(exc, DomainError):
            status, code, message, details = exc.status, exc.code, exc.message, exc.details
            extra = tuple(
                (k.lower().encode(), v.encode()) for k, v in (error_headers(exc) or {}).items()
            )
        else:
            crashed(exc, request_id=rid, route=route)
            status, code, message, details, extra = 500, "internal", INTERNAL, None, ()
        key = (route, status, extra)
        answer = self._errors.get(key)
        if answer is None:
            answer = Answer(self.service, scope["method"], route, status, extra)
            if len(self._errors) < 100:  # a handful in practice; bounded whatever happens
                self._errors[key] = answer
        body = dumps(error_body(code, message, details, rid))
        await answer.send(scope, send, headers, body, start, rid)
        self.taken += 1


class _Sending:
    """A send that remembers whether the answer has started."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: Message) -> None:
        self.started = True
        await self.send(message)
