"""What handlers receive: the engine, the caller, and the page size.

These dependencies do no I/O, so they are `async def`: FastAPI runs a plain `def` dependency
in the thread pool, a round trip per dependency per request that cost more than the work.
The routes are `async` too and hand their database work to the engine's threads
(`storage.db.read`), one hop per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import Engine

from medrobotics.auth import OPEN, Principal, audit_phi
from medrobotics.config import Settings
from medrobotics.domain.outcomes import PHI_FIELDS as OUTCOME_PHI
from medrobotics.domain.procedures import PHI_FIELDS as PROCEDURE_PHI
from medrobotics.errors import InvalidInput
from medrobotics.storage.db import run
from medrobotics.web import ORJSONResponse, amend_openapi

PHI_FIELDS = frozenset(PROCEDURE_PHI + OUTCOME_PHI)


async def get_engine(request: Request) -> Engine:
    """Return the service's engine."""
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    """Return the service's settings."""
    settings: Settings = request.app.state.settings
    return settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and whether they may see patient data (the `phi:read` scope)."""

    name: str
    phi: bool
    principal: Principal | None = None
    request: Request | None = field(default=None, compare=False)


async def get_caller(request: Request) -> Caller:
    """Identify the caller (the router's `api:read` check has verified the key)."""
    who: Principal = request.scope.get("principal") or OPEN
    return Caller(name=who.name, phi=who.phi, principal=who, request=request)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def respond(caller: Caller, data: dict[str, Any]) -> ORJSONResponse:
    """Answer with `data` as the caller may see it, serialized once, by orjson.

    Patient fields (at any depth) are dropped unless the caller holds `phi:read`; when shown,
    the records are audited. The route's response_model is the contract: a test holds every
    answer to it. FastAPI's re-validation of the returned dict would only check, at every
    request, what the typed rows already are.
    """
    if not caller.phi:
        return ORJSONResponse(strip_phi(data))
    await audit(caller, sorted(_phi_records(data)))
    return ORJSONResponse(data)


async def audit(caller: Caller, record_ids: list[str]) -> None:
    """Record that the caller was shown the patient data of `record_ids` (none: nothing)."""
    if record_ids and caller.request is not None and caller.principal is not None:
        engine: Engine = caller.request.app.state.engine
        await run(engine, audit_phi, engine, caller.request, caller.principal, record_ids)


def _phi_records(value: Any) -> set[str]:
    # The ids of the records whose patient fields are being returned (never the values).
    found: set[str] = set()
    if isinstance(value, dict):
        if any(value.get(k) is not None for k in PHI_FIELDS):
            found.add(str(value.get("procedure_id", "?")))
        for v in value.values():
            if isinstance(v, (dict, list)):
                found |= _phi_records(v)
    elif isinstance(value, list):
        for v in value:
            found |= _phi_records(v)
    return found


def strip_phi(data: dict[str, Any]) -> dict[str, Any]:
    """Return `data` without patient fields, at any depth."""
    stripped: dict[str, Any] = _strip(data)
    return stripped


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in PHI_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


Limit = Annotated[
    int, Query(ge=1, description="Items per page, up to `maximum` (MEDROBOTICS_MAX_PAGE_SIZE).")
]


async def page_limit(request: Request, limit: Limit = 50) -> int:
    """Check the page size against the configured maximum."""
    # The settings from the app, not a sub-dependency: each one costs every list request.
    most = request.app.state.settings.max_page_size
    if limit > most:
        raise invalid("limit", f"must be at most {most}")
    return limit


LimitDep = Annotated[int, Depends(page_limit)]


async def keyset_limit(
    request: Request,
    limit: Limit = 50,
    offset: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> int:
    """Check the page size of a list paged by cursor, and refuse `offset` there.

    Clients written for offset-paged APIs send `offset`; ignored, such a client would read
    the first page forever.
    """
    if offset is not None:
        raise invalid(
            "offset",
            "this list is paged by cursor, not offset: follow `next`, or pass the previous "
            "page's `next_cursor` as `cursor`",
        )
    return await page_limit(request, limit)


KeysetLimitDep = Annotated[int, Depends(keyset_limit)]
"""The page size of a list paged by cursor."""


def document_page_size(app: FastAPI, settings: Settings) -> None:
    """State the configured page size as the maximum of every `limit` in the app's OpenAPI.

    The routes are declared once, at import; the maximum is the settings' (see `page_limit`).
    """

    def edit(doc: dict[str, Any]) -> None:
        for item in doc["paths"].values():
            for operation in item.values():
                for param in operation.get("parameters", []):
                    if param["in"] == "query" and param["name"] == "limit":
                        param["schema"]["maximum"] = settings.max_page_size

    amend_openapi(app, edit)


def invalid(field: str, message: str) -> InvalidInput:
    """Return the 422 error naming one query parameter."""
    return InvalidInput(
        f"invalid parameter: {field}",
        details=[{"field": field, "message": message, "index": None}],
    )
