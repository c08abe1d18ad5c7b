"""The common reads of the query API, answered below FastAPI.

Dashboards poll the lists of procedures, outcomes and robots and open procedures one by one.
This raw ASGI path (see medrobotics.fastpath) answers exactly the plain case of those GETs: a
key already verified holding `api:read` but not `phi:read` (patient data is read, and audited,
through the routes), within the rate limit, with query parameters it fully understands and
that are plainly valid. It reads through the same storage queries and builds the same page as
the routes. Anything else (another parameter, a value it would have to interpret, an unknown
procedure) goes to the FastAPI app unchanged, which gives the answer. An error met here is
answered here (see medrobotics.fastpath): a database outage with the app's 503, as trying again
through the app would double the wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from medrobotics.api.deps import strip_phi
from medrobotics.api.params import decode_cursor, keyset_page, offset_page
from medrobotics.auth import Guard, Principal
from medrobotics.config import Settings
from medrobotics.domain.outcomes import SuccessStatus
from medrobotics.domain.procedures import Category, ProcedureStatus
from medrobotics.domain.robots import RobotStatus
from medrobotics.domain.types import plain
from medrobotics.errors import InvalidInput, RateLimited
from medrobotics.fastpath import Answer, App, FastPath, headers_of, known_caller
from medrobotics.storage import outcomes, procedures, robots
from medrobotics.storage.db import Reader
from medrobotics.web import dumps

SCOPE = "api:read"
DETAIL = "/api/procedures/"

Parse = Callable[[str], Any]


class Decline(Exception):
    """Not the plain case: the app answers this request."""


def _digits(value: str, lo: int, hi: int) -> int:
    # Plain ASCII digits without a leading zero; pydantic reads more forms, the app takes those.
    if not (value.isascii() and value.isdigit()) or (value[0] == "0" and value != "0"):
        raise Decline
    n = int(value)
    if not lo <= n <= hi:
        raise Decline
    return n


def _one_of(allowed: Any) -> Parse:
    names = frozenset(get_args(allowed))

    def parse(value: str) -> str:
        if value not in names:
            raise Decline
        return value

    return parse


def _ident(longest: int) -> Parse:
    def parse(value: str) -> str:
        if not 0 < len(value) <= longest or not plain(value):
            raise Decline
        return value

    return parse


def _flag(value: str) -> bool:
    if value not in ("true", "false"):
        raise Decline
    return value == "true"


def _cursor(value: str) -> Any:
    if len(value) > 1000:
        raise Decline
    try:
        return decode_cursor(value)
    except InvalidInput:
        raise Decline from None


PROCEDURE_PARAMS: dict[str, Parse] = {
    "category": _one_of(Category),
    "robot_id": _ident(128),
    "facility_id": _ident(128),
    "surgeon_id": _ident(128),
    "status": _one_of(ProcedureStatus),
    "cursor": _cursor,
}
OUTCOME_PARAMS: dict[str, Parse] = {
    "success_status": _one_of(SuccessStatus),
    "category": _one_of(Category),
    "readmission": _flag,
    "cursor": _cursor,
}
ROBOT_PARAMS: dict[str, Parse] = {
    "facility_id": _ident(128),
    "status": _one_of(RobotStatus),
    "model": _ident(200),
    "offset": lambda v: _digits(v, 0, 1_000_000),
}
LISTS: dict[str, dict[str, Parse]] = {
    "/api/procedures": PROCEDURE_PARAMS,
    "/api/outcomes": OUTCOME_PARAMS,
    "/api/robots": ROBOT_PARAMS,
}
"""The lists answered here and the parameters understood (besides `limit`)."""


def taken(scope: Scope) -> bool:
    """Tell whether a request is one the fast path may answer (by method and path)."""
    path: str = scope["path"]
    return scope["method"] == "GET" and (path in LISTS or path.startswith(DETAIL))


class FastReads(FastPath):
    """Answers plain list and detail GETs itself; hands every other request to `app`."""

    def __init__(self, *, service: str, settings: Settings, guard: Guard, reader: Reader) -> None:
        super().__init__(service)
        self.guard, self.reader = guard, reader
        self.max_limit = settings.max_page_size
        self.lists = {path: Answer(service, "GET", path, 200) for path in LISTS}
        self.detail = Answer(service, "GET", DETAIL + "{procedure_id}", 200)

    def route(self, scope: Scope) -> str:
        """Return the route template the request counts under."""
        path: str = scope["path"]
        return path if path in LISTS else self.detail.route

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, app: App, start: float
    ) -> None:
        """Answer a plain read, or hand the request to `app`; an error raised is answered here."""
        headers = headers_of(scope)
        if headers is None:
            await app(scope, receive, send)
            return
        try:
            answer, body = await self._answer(scope, headers)
        except Decline:
            await app(scope, receive, send)
            return
        await answer.send(scope, send, headers, body, start)
        self.taken += 1

    async def _answer(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[Answer, bytes]:
        who = known_caller(self.guard, headers)
        if who is None or not who.allows(SCOPE) or who.phi:
            raise Decline
        path: str = scope["path"]
        raw: bytes = scope["query_string"]
        if path.startswith(DETAIL):
            ident = path[len(DETAIL) :]
            if raw or not 0 < len(ident) <= 128 or "/" in ident or not plain(ident):
                raise Decline
            self._throttle(who)
            return self.detail, dumps(strip_phi(await self._detail(ident)))
        # As Starlette reads a query string (QueryParams), so that `next` links match.
        query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        given = dict(query)
        if len(given) != len(query):
            raise Decline  # a repeated parameter: the app's rules decide which counts
        limit = _digits(given.pop("limit", "50"), 1, self.max_limit)
        known = LISTS[path]
        values = {name: known[name](value) for name, value in given.items() if name in known}
        if len(values) != len(given):
            raise Decline
        self._throttle(who)
        page = await self._list(path, query, values, limit)
        return self.lists[path], dumps(page)

    def _throttle(self, who: Principal) -> None:
        try:
            self.guard.throttle(who)
        except RateLimited:
            raise Decline from None

    async def _detail(self, ident: str) -> dict[str, Any]:
        row = await self.reader.first(procedures.detail_select(), {"procedure_id": ident})
        if row is None:
            raise Decline  # the app answers 404
        return procedures.detail_from(row)

    async def _list(
        self, path: str, query: list[tuple[str, str]], values: Mapping[str, Any], limit: int
    ) -> dict[str, Any]:
        args = dict(values)
        if path == "/api/robots":
            offset = args.pop("offset", 0)
            rows = await self.reader.page(robots.page(**args, limit=limit, offset=offset))
            return offset_page(path, query, rows, limit, offset)
        after = args.pop("cursor", None)
        lister = procedures.page if path == "/api/procedures" else outcomes.page
        rows = await self.reader.page(lister(**args, after=after, limit=limit, phi=False))
        return keyset_page(path, query, rows, limit)
