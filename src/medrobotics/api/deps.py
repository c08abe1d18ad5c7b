"""What handlers receive: the engine, the caller, and the page size.

These dependencies do no I/O, so they are `async def`: FastAPI runs a plain `def` dependency
in the thread pool, a round trip per dependency per request that cost more than the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy import Engine

from medrobotics.config import Settings
from medrobotics.domain.outcomes import PHI_FIELDS as OUTCOME_PHI
from medrobotics.domain.procedures import PHI_FIELDS as PROCEDURE_PHI
from medrobotics.errors import InvalidInput

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


ANONYMOUS = Caller(name="anonymous", phi=True)


async def get_caller(request: Request) -> Caller:
    """Identify the caller."""
    # Authentication is off: Settings configures no API keys, and the service is reachable only
    # through the private load balancer, so every caller is the programme's own staff. API keys
    # with scopes replace this body; handlers already pass every answer through `visible`.
    del request
    return ANONYMOUS


CallerDep = Annotated[Caller, Depends(get_caller)]


def visible(caller: Caller, data: dict[str, Any]) -> dict[str, Any]:
    """Drop patient data (at any depth) unless the caller holds the `phi:read` scope."""
    if caller.phi:
        return data
    stripped: dict[str, Any] = _strip(data)
    return stripped


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in PHI_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


async def page_limit(
    settings: SettingsDep,
    limit: Annotated[
        int, Query(ge=1, description="Items per page; at most the service's maximum (500).")
    ] = 50,
) -> int:
    """Check the page size against the configured maximum."""
    if limit > settings.max_page_size:
        raise invalid("limit", f"must be at most {settings.max_page_size}")
    return limit


LimitDep = Annotated[int, Depends(page_limit)]


def invalid(field: str, message: str) -> InvalidInput:
    """Return the 422 error naming one query parameter."""
    return InvalidInput(
        f"invalid parameter: {field}",
        details=[{"field": field, "message": message, "index": None}],
    )
