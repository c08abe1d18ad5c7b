"""The single-sample happy path of POST /ingest/telemetry, answered below FastAPI.

Robots post one sample per request by the thousand a second; FastAPI's per-request work
(middleware, dependency solving, request objects) costs several times the sample's own. This
raw ASGI path handles exactly the common case: a JSON body plainly valid for the fast decoder,
a key already verified (or authentication off) holding `ingest:write`, within the rate and
size limits. It answers what the FastAPI route answers (status, body, headers), records the
same metrics and access log line, and commits through the same group writer. Anything else,
including every error, is replayed unchanged into the FastAPI app, which stays the reference
and the OpenAPI document's source.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.types import Message, Receive, Scope, Send

from medrobotics import logs, metrics
from medrobotics.auth import Guard, key_of
from medrobotics.config import Settings
from medrobotics.domain.telemetry import fast_rows
from medrobotics.errors import RateLimited
from medrobotics.ingestion.writer import GroupWriter
from medrobotics.web import REQUEST_ID

PATH = "/ingest/telemetry"
SCOPE = "ingest:write"
log = logs.get("medrobotics.web")  # the access log's logger, as RequestContext writes it

App = Callable[[Scope, Receive, Send], Awaitable[None]]


class FastTelemetry:
    """Answers plain single-sample posts itself; hands every other request to `app`."""

    def __init__(
        self, *, service: str, settings: Settings, guard: Guard, writer: GroupWriter
    ) -> None:
        self.service, self.guard, self.writer = service, guard, writer
        self.limit = settings.max_body_bytes
        self.max_records = settings.max_batch_records
        self.answers = metrics.Answers(service, "POST", PATH, 201)
        self.received = metrics.RECEIVED.labels("telemetry")
        self.taken = 0
        """Requests answered here (the rest went to the app)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        start = time.perf_counter()
        raw = scope["headers"]
        headers = dict(raw)
        if len(headers) != len(raw):  # a repeated header: the app's rules decide which counts
            await app(scope, receive, send)
            return
        who = self.guard.cached(
            key_of(_text(headers.get(b"authorization")), _text(headers.get(b"x-api-key")))
        )
        if (
            who is None
            or not who.allows(SCOPE)
            or not _plain_json(headers.get(b"content-type"))
            or headers.get(b"content-encoding", b"identity").strip().lower() not in _IDENTITY
        ):
            await app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await app(scope, receive, send)
            return
        # The body, kept message by message so that the app can be given exactly the same.
        messages: list[Message] = []
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await app(scope, _replay(messages, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await app(scope, _replay(messages, receive), send)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        rows = fast_rows(parts[0] if len(parts) == 1 else b"".join(parts))
        if not rows or len(rows) > self.max_records:
            await app(scope, _replay(messages, receive), send)
            return
        try:
            self.guard.throttle(who)
        except RateLimited:
            await app(scope, _replay(messages, receive), send)
            return
        try:
            await self.writer.submit(rows)
        except Exception:  # nothing was committed: the app gives the answer
            await app(scope, _replay(messages, receive), send)
            return
        self.received.inc(len(rows))
        incoming = _text(headers.get(b"x-request-id")) or ""
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        body = _ONE if len(rows) == 1 else _stored(len(rows))
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self.taken += 1
        elapsed = time.perf_counter() - start
        self.answers.observe(elapsed)
        if not _info_on():  # the access line would be dropped: skip building it
            return
        trace = (_text(headers.get(b"x-amzn-trace-id")) or "")[:256] or None
        client = scope.get("client")
        with structlog.contextvars.bound_contextvars(
            service=self.service, request_id=rid, trace_id=trace
        ):
            log.info(
                "request",
                method="POST",
                route=PATH,
                status=201,
                duration_ms=round(elapsed * 1000, 2),
                client=client[0] if client else None,
            )


_IDENTITY = (b"", b"identity")
_INFO: dict[Any, bool] = {}


def _info_on() -> bool:
    # Read per request (logging may be configured after the app is built), cached per class.
    wrapper = structlog.get_config()["wrapper_class"]
    on = _INFO.get(wrapper)
    if on is None:
        probe = getattr(wrapper, "is_enabled_for", None)
        on = _INFO[wrapper] = True if probe is None else bool(probe(None, logging.INFO))
    return on


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _plain_json(value: bytes | None) -> bool:
    # The same reading of Content-Type as body.media_type: parameters and case do not matter.
    if value is None:
        return False
    return value.split(b";", 1)[0].strip().lower() == b"application/json"


def _stored(received: int) -> bytes:
    # The route's Stored answer for a shared commit (written and duplicates unknown).
    body: dict[str, Any] = {
        "entity": "telemetry",
        "received": received,
        "written": None,
        "duplicates": None,
    }
    return orjson.dumps(body)


_ONE = _stored(1)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive that gives `messages` again, then whatever follows them."""
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
