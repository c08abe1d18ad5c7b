"""The single-sample happy path of POST /ingest/telemetry, answered below FastAPI.

Robots post one sample per request by the thousand a second. This raw ASGI path (see
medrobotics.fastpath) handles exactly the common case: a JSON body plainly valid for the fast
decoder, a key already verified (or authentication off) holding `ingest:write`, within the rate
and size limits. It commits through the same group writer as the route. Any other request is
replayed unchanged into the FastAPI app, before any write is tried. A write that fails is
answered here with the route's error (422 for data the database refused, 503 with Retry-After
for an outage): replaying it would write it a second time.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from medrobotics import metrics
from medrobotics.auth import Guard
from medrobotics.config import Settings
from medrobotics.domain.telemetry import fast_rows
from medrobotics.errors import RateLimited
from medrobotics.fastpath import Answer, App, FastPath, headers_of, known_caller
from medrobotics.ingestion.writer import GroupWriter

PATH = "/ingest/telemetry"
SCOPE = "ingest:write"


class FastTelemetry(FastPath):
    """Answers plain single-sample posts itself; hands every other request to `app`."""

    def __init__(
        self, *, service: str, settings: Settings, guard: Guard, writer: GroupWriter
    ) -> None:
        super().__init__(service)
        self.guard, self.writer = guard, writer
        self.limit = settings.max_body_bytes
        self.max_records = settings.max_batch_records
        self.answer = Answer(service, "POST", PATH, 201)
        self.received = metrics.RECEIVED.labels("telemetry")

    def route(self, scope: Scope) -> str:
        """Return the route template (the one route served here)."""
        return PATH

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, app: App, start: float
    ) -> None:
        """Commit a plain post and answer it, or replay the request into `app` untried."""
        headers = headers_of(scope)
        if headers is None:
            await app(scope, receive, send)
            return
        who = known_caller(self.guard, headers)
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
        # A failure raises: FastPath answers it as the route would (the write is not tried again).
        await self.writer.submit(rows)
        self.received.inc(len(rows))
        body = _ONE if len(rows) == 1 else _stored(len(rows))
        await self.answer.send(scope, send, headers, body, start)
        self.taken += 1


_IDENTITY = (b"", b"identity")


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
