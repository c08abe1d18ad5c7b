"""Reusable constrained types: identifiers, finite numbers, UTC times."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)


def _to_utc(value: datetime) -> datetime:
    # A timestamp without a zone is UTC (the data model says so); others are converted.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
"""An identifier: UUIDs and readable ids such as `robot-1`; no spaces or control characters."""

Text = Annotated[str, StringConstraints(max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=10_000)]


def iso(value: datetime) -> str:
    """Write a time as ISO 8601, the fraction without trailing zeros (as PostgreSQL does)."""
    text = value.isoformat()
    if value.microsecond:
        # Pages built by PostgreSQL and by the service must read alike: ".5", not ".500000".
        head, _, tail = text.partition(".")
        text = f"{head}.{tail[:6].rstrip('0')}{tail[6:]}"
    return text


UtcDateTime = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(iso, return_type=str, when_used="json"),
    # Answers document what they hold: a date-time string (the serializer returns plain str).
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""ISO 8601 time; one without a zone is UTC; always returned as UTC with an explicit offset."""

Day = date

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]

INPUT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
"""Model config for everything a client sends: unknown fields and NaN/Infinity are refused."""

OUTPUT = ConfigDict(from_attributes=True)
