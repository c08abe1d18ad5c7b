"""Short-lived shared answers: many dashboards polling the same figures cost one query.

`cached` wraps a route's function. Identical requests (the same route, the same parameters as
validated) within `MEDROBOTICS_ANALYTICS_CACHE_SECONDS` get the answer computed first; concurrent
identical requests wait for one computation, and once it expires the next is computed while
the last is still given (see AnswerCache). Every answer carries an `ETag` and a short
`Cache-Control`, and a request whose `If-None-Match` names the current answer gets a 304.

The key is the request alone, never the caller: only routes whose answers are the same for every
caller allowed to make them (no patient data, no per-key filtering) may be wrapped. The route's
own dependencies, the key check among them, run before the cache is consulted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, get_type_hints

from fastapi import Request, Response
from pydantic import TypeAdapter

from medrobotics.storage import db
from medrobotics.web import dumps

Key = tuple[Hashable, ...]
PLAIN = (str, int, float, bool, type(None), datetime, date)
"""Types of the parameter values that make up a key; dependencies (the engine) are left out."""


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {"description": "Tag of this answer", "schema": {"type": "string"}},
            "Cache-Control": {
                "description": "`private, max-age=N`: N is the cache's seconds",
                "schema": {"type": "string"},
            },
        }
    },
    304: {
        "description": "Not modified: `If-None-Match` names the current answer's `ETag`",
        "headers": {"ETag": {"description": "Tag of the answer", "schema": {"type": "string"}}},
    },
}
"""What a `cached` route adds to its documented responses."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One computed answer: its JSON, and its entity tag."""

    data: bytes
    etag: str
    expires: float


class AnswerCache:
    """Answers by key until they expire; at most `size` kept, the oldest dropped first.

    An answer just expired (by less than `seconds` more) is still given while one request
    computes the next, so no caller waits on a recomputation: an answer is at most twice
    `seconds` old, plus the time to compute it.
    """

    def __init__(
        self, seconds: float, *, size: int = 512, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[Entry]] = {}

    def fresh(self, key: Key, now: float) -> Entry | None:
        """Return the unexpired answer for `key`, if any."""
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > now else None

    async def get(self, key: Key, compute: Callable[[], Awaitable[bytes]]) -> Entry:
        """Return the answer for `key`: a fresh one, the one being computed, or a new one."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            return entry
        pending = self._refresh(key, compute)
        if entry is not None and entry.expires + self.seconds > now:
            return entry  # just expired: the next one is on its way
        # Shielded: one caller going away must not cancel the others' answer.
        return await asyncio.shield(pending)

    def _refresh(self, key: Key, compute: Callable[[], Awaitable[bytes]]) -> asyncio.Future[Entry]:
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fill(key, compute))
            self._pending[key] = pending
            pending.add_done_callback(functools.partial(self._settled, key))
        return pending

    async def _fill(self, key: Key, compute: Callable[[], Awaitable[bytes]]) -> Entry:
        data = await compute()
        entry = Entry(data, etag_of(data), self.clock() + self.seconds)
        if self.seconds > 0:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry

    def _settled(self, key: Key, done: asyncio.Future[Entry]) -> None:
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone


def etag_of(body: bytes) -> str:
    """Return a strong entity tag for an answer: a digest of its bytes."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Tell whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 says)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def cached(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Serve a route's answers from the app's `AnswerCache` (`app.state.answers`).

    The answer is kept as the JSON the route's `response_model` makes of it: a repeated
    request costs neither the query nor the validation and serialization of a long list.
    """
    hints = get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    params = [p.replace(annotation=hints.get(p.name, Any)) for p in signature.parameters.values()]
    params += [
        inspect.Parameter("cache_request_", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
    ]
    run = func if inspect.iscoroutinefunction(func) else None

    async def route(cache_request_: Request, **kwargs: Any) -> Response:
        answers: AnswerCache = cache_request_.app.state.answers
        model = getattr(cache_request_.scope.get("route"), "response_model", None)
        key = (func.__qualname__, *sorted((k, v) for k, v in kwargs.items() if _plain(v)))

        async def compute() -> bytes:
            if run is not None:
                return _json(model, await run(**kwargs))
            # A plain function does blocking I/O: on the engine's threads, as every read.
            engine = cache_request_.app.state.engine
            return await db.run(engine, lambda: _json(model, func(**kwargs)))

        entry = await answers.get(key, compute)
        headers = {
            "ETag": entry.etag,
            "Cache-Control": f"private, max-age={int(answers.seconds)}",
        }
        if matches(cache_request_.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
        return Response(entry.data, media_type="application/json", headers=headers)

    functools.update_wrapper(route, func, updated=())
    del route.__wrapped__  # type: ignore[attr-defined]  # FastAPI reads the signature below
    route.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=hints.get("return", Any)
    )
    return route


def _json(model: Any, data: Any) -> bytes:
    # What FastAPI does with a returned value: validate it as the response model, dump it
    # for JSON (by alias), write it as every answer is written.
    if model is None:
        return dumps(data)
    adapter = _adapter(model)
    return dumps(adapter.dump_python(adapter.validate_python(data), mode="json", by_alias=True))


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _plain(value: Any) -> bool:
    return isinstance(value, PLAIN)
