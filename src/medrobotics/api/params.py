"""Query parameters shared by several endpoints: time windows, cursors, next links."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import Path, Query, Request
from fastapi.dependencies.models import Dependant
from pydantic import AfterValidator, StringConstraints

from medrobotics.api.deps import Caller, audit, invalid
from medrobotics.domain.types import (
    QUERY_EARLIEST,
    QUERY_LATEST,
    QueryTime,
    plain,
    refuse_controls,
)
from medrobotics.storage.keyset import Key, next_key
from medrobotics.storage.pages import Rows
from medrobotics.web import ORJSONResponse

PathId = Annotated[
    str,
    Path(min_length=1, max_length=128, description="The identifier."),
    AfterValidator(refuse_controls),
]
FilterId = Annotated[str, StringConstraints(max_length=128), AfterValidator(refuse_controls)]
"""An identifier to filter by: no control characters (no stored id holds one)."""
FilterText = Annotated[str, StringConstraints(max_length=200), AfterValidator(refuse_controls)]
"""A name to filter by, such as a robot model."""
Start = Annotated[
    QueryTime | None,
    Query(description="ISO 8601, inclusive; without a zone it is UTC."),
]
End = Annotated[
    QueryTime | None,
    Query(description="ISO 8601, exclusive; without a zone it is UTC. Must be after `start`."),
]
Cursor = Annotated[
    str | None, Query(max_length=1000, description="`next_cursor` of the previous page.")
]


def check_range(start: datetime | None, end: datetime | None) -> None:
    """Refuse a range whose end is not after its start."""
    if start is not None and end is not None and end <= start:
        raise invalid("end", "must be after start")


def window(
    days: int, start: datetime | None, end: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Resolve `[start, end)`: explicit bounds win; a missing one is `days` from the other."""
    check_range(start, end)
    if end is None:
        end = now or datetime.now(UTC)
    if start is None:
        if end - QUERY_EARLIEST < timedelta(days=days):
            raise invalid("end", f"too early for a window of {days} days")
        start = end - timedelta(days=days)
    check_range(start, end)
    return start, end


def encode_cursor(key: Key) -> str:
    """Return the opaque cursor for a keyset position."""
    raw = orjson.dumps([key[0].isoformat(), key[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Key | None:
    """Read a cursor made by `encode_cursor`; anything else is a 422 naming `cursor`."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time, ident = orjson.loads(raw)
        when = datetime.fromisoformat(time)
        if when.tzinfo is None or not isinstance(ident, str):
            raise ValueError("incomplete cursor")
        when = when.astimezone(UTC)
        # Never issued (every key is a stored start time and id), and unsafe to query with.
        if not QUERY_EARLIEST <= when <= QUERY_LATEST or not 0 < len(ident) <= 128:
            raise ValueError("out of range")
        if not plain(ident):
            raise ValueError("control characters")
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise invalid("cursor", "not a cursor this service issued") from None
    return when, ident


def next_link(path: str, query: Sequence[tuple[str, str]], **params: str | int) -> str:
    """Return `path` with the request's `query` items, `params` replaced."""
    # From the parsed query, not `request.url`: rebuilding the whole URL cost more than the
    # rest of a page's Python work.
    kept = [(k, v) for k, v in query if k not in params]
    kept += [(k, str(v)) for k, v in params.items()]
    return f"{path}?{urlencode(kept)}"


def query_of(request: Request) -> tuple[str, list[tuple[str, str]]]:
    """Return the request's path and the query items its route takes, for the next link.

    A parameter the route does not take changes nothing in the answer, and is not carried
    into `next`: a client's junk (a megabyte of it, say) is not sent back on every page.
    """
    route = request.scope["route"]
    names = _TAKEN.get(route.endpoint)
    if names is None:  # one entry per list route
        names = _TAKEN[route.endpoint] = _taken(route.dependant)
    items = [(k, v) for k, v in request.query_params.multi_items() if k in names]
    return request.scope["path"], items


_TAKEN: dict[Callable[..., Any], frozenset[str]] = {}


def _taken(dependant: Dependant) -> frozenset[str]:
    # The route's query parameters, its dependencies' included (the page size, say).
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _taken(sub)
    return frozenset(names)


def keyset_page(
    path: str, query: Sequence[tuple[str, str]], rows: Rows, limit: int
) -> dict[str, Any]:
    """Return a keyset page: the items, and the cursor and link of the next page (or None)."""
    key = next_key(rows)
    token = encode_cursor(key) if key is not None else None
    return {
        "items": rows.items,
        "limit": limit,
        "next_cursor": token,
        "next": next_link(path, query, cursor=token) if token else None,
    }


def offset_page(
    path: str, query: Sequence[tuple[str, str]], rows: Rows, limit: int, offset: int
) -> dict[str, Any]:
    """Return an offset page: the items, the total, and the link of the next page (or None)."""
    return {
        "items": rows.items,
        "total": rows.total,
        "limit": limit,
        "offset": offset,
        "next": next_link(path, query, offset=offset + limit) if rows.more else None,
    }


async def respond_page(caller: Caller, request: Request, rows: Rows, limit: int) -> ORJSONResponse:
    """Answer a keyset page (patient fields already left out unless the caller may see them).

    The records whose patient data is shown are audited, by id.
    """
    if caller.phi:
        await audit(caller, sorted(rows.flagged))
    return ORJSONResponse(keyset_page(*query_of(request), rows, limit))
