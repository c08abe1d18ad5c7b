"""Reusable constrained types: identifiers, text, finite numbers, UTC times, and their rules.

The rules are the same on both databases (docs/data-rules.md): what one refuses, the other
never sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

# --- Text ---------------------------------------------------------------------------------------

# C0 and C1 control characters (NUL among them) and lone surrogates: PostgreSQL refuses NUL and
# cannot encode a surrogate, and none of them belongs in a name, a label or an id.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text may hold lines and tabs.
_CONTROL_IN_LONG = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def plain(value: str) -> bool:
    """Tell whether `value` holds no control character and no lone surrogate."""
    return _CONTROL.search(value) is None


def refuse_controls(value: str) -> str:
    """Return `value`, or raise ValueError if it holds a control character or lone surrogate."""
    if _CONTROL.search(value) is not None:
        raise ValueError("must not contain control characters")
    return value


def _plain_long(value: str) -> str:
    if _CONTROL_IN_LONG.search(value) is not None:
        raise ValueError("must not contain control characters other than tab and line breaks")
    return value


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
"""An identifier: UUIDs and readable ids such as `robot-1`; no spaces or control characters."""

Text = Annotated[str, StringConstraints(max_length=200), AfterValidator(refuse_controls)]
"""A name or label: any printable text, no control characters."""

LongText = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_plain_long)]
"""Free text (notes): tab, newline and carriage return allowed, no other control character."""

# --- Times --------------------------------------------------------------------------------------


def iso(value: datetime) -> str:
    """Write a time as ISO 8601, the fraction without trailing zeros (as PostgreSQL does)."""
    text = value.isoformat()
    if value.microsecond:
        # Pages built by PostgreSQL and by the service must read alike: ".5", not ".500000".
        head, _, tail = text.partition(".")
        text = f"{head}.{tail[:6].rstrip('0')}{tail[6:]}"
    return text


def _to_utc(value: datetime) -> datetime:
    # A timestamp without a zone is UTC (the data model says so); others are converted.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before the first representable UTC
        raise ValueError("out of range") from None


UtcDateTime = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(iso, return_type=str, when_used="json"),
    # Answers document what they hold: a date-time string (the serializer returns plain str).
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""ISO 8601 time; one without a zone is UTC; always returned as UTC with an explicit offset."""

Day = date

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)
PLAN_AHEAD = timedelta(days=3653)
"""How far ahead a planned date (the next maintenance) may lie: ten years."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Where sample and event times must lie: from `earliest` to `ahead` past the clock."""

    earliest: datetime = EARLIEST
    ahead: timedelta = AHEAD

    def latest(self) -> datetime:
        """Return the latest time accepted now."""
        return datetime.now(UTC) + self.ahead


_window = TimeWindow()


def use_time_window(window: TimeWindow) -> None:
    """Set the window every sample and event time is checked against (from the settings)."""
    global _window
    _window = window


def time_window() -> TimeWindow:
    """Return the window in force."""
    return _window


def _event_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Compared before converting: aware times compare without overflow at the calendar edges.
    window = _window
    if value < window.earliest:
        raise ValueError(f"must not be before {iso(window.earliest)}")
    if value > window.latest():
        raise ValueError(f"must not be more than {_span(window.ahead)} past the server's clock")
    return value.astimezone(UTC)


def _event_day(value: date) -> date:
    window = _window
    if value < window.earliest.date():
        raise ValueError(f"must not be before {window.earliest.date().isoformat()}")
    if value > window.latest().date():
        raise ValueError(f"must not be more than {_span(window.ahead)} past the server's clock")
    return value


def _plan_day(value: date) -> date:
    window = _window
    if value < window.earliest.date():
        raise ValueError(f"must not be before {window.earliest.date().isoformat()}")
    if value > (datetime.now(UTC) + PLAN_AHEAD).date():
        raise ValueError("must not be more than 10 years ahead")
    return value


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours"


EventTime = Annotated[
    datetime,
    AfterValidator(_event_time),
    PlainSerializer(iso, return_type=str, when_used="json"),
]
"""When a sample was taken or an event happened: a UtcDateTime inside the time window."""

EventDay = Annotated[date, AfterValidator(_event_day)]
"""The day something happened: inside the time window."""

PlanDay = Annotated[date, AfterValidator(_plan_day)]
"""A planned day: from the window's start to ten years ahead."""

QUERY_EARLIEST = datetime(1, 2, 1, tzinfo=UTC)
QUERY_LATEST = datetime(9999, 12, 1, tzinfo=UTC)
"""Query bounds keep a month from the calendar's edges: date arithmetic on them (whole days,
weeks and months of the analytics) cannot overflow."""


def _query_time(value: datetime) -> datetime:
    value = _to_utc(value)
    if not QUERY_EARLIEST <= value <= QUERY_LATEST:
        raise ValueError("out of range (0001-02-01 to 9999-12-01 UTC)")
    return value


QueryTime = Annotated[datetime, AfterValidator(_query_time)]
"""A time bound of a query: any ISO 8601 time a month or more inside the calendar's edges."""

# --- Numbers ------------------------------------------------------------------------------------

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]

INPUT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
"""Model config for everything a client sends: unknown fields and NaN/Infinity are refused."""

OUTPUT = ConfigDict(from_attributes=True)

NEXT = (
    "Path and query of the next page: the parameters of this request that the operation "
    "takes, the cursor (or offset) moved on; null on the last page."
)
"""What a list's `next` link holds (unknown parameters are left out of it)."""
