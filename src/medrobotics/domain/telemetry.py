"""Telemetry sample wire schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, Field

from medrobotics.domain.types import ID_PATTERN, INPUT, Finite, Id, Text, UtcDateTime

READINGS: tuple[str, ...] = (
    "arm_position_x",
    "arm_position_y",
    "arm_position_z",
    "arm_rotation",
    "grip_pressure",
    "tremor_compensation",
    "camera_zoom",
    "camera_angle",
    "force_feedback_x",
    "force_feedback_y",
    "force_feedback_z",
    "system_temperature",
    "power_consumption",
)
"""The numeric channels, in storage order."""

COLUMNS: tuple[str, ...] = (
    "procedure_id",
    "robot_id",
    "timestamp",
    *READINGS[:4],
    "tool_type",
    *READINGS[4:],
)
"""Every stored field of a sample, in table order."""


class TelemetryIn(BaseModel):
    """One reading streamed by a robot during a procedure; keyed by robot, procedure and time.

    The procedure need not exist yet: telemetry streams during surgery, the procedure record
    often comes afterwards.
    """

    model_config = INPUT

    procedure_id: Id
    robot_id: Id
    timestamp: UtcDateTime
    arm_position_x: Finite | None = None
    arm_position_y: Finite | None = None
    arm_position_z: Finite | None = None
    arm_rotation: Finite | None = None
    tool_type: Text | None = None
    grip_pressure: Finite | None = None
    tremor_compensation: Finite | None = None
    camera_zoom: Finite | None = None
    camera_angle: Finite | None = None
    force_feedback_x: Finite | None = None
    force_feedback_y: Finite | None = None
    force_feedback_z: Finite | None = None
    system_temperature: Finite | None = None
    power_consumption: Finite | None = None

    def row(self) -> tuple[object, ...]:
        """Return the values in table order, for the bulk writer."""
        d = self.__dict__
        return tuple(d[c] for c in COLUMNS)


# The fast path. Telemetry arrives by the million; pydantic's per-record cost would make
# validation the ceiling of the whole ingest path (see docs/benchmarks.md). msgspec decodes the
# same schema in C, several times faster. It only ever says "valid, here are the rows" or "not
# sure": anything it refuses goes through TelemetryIn, which gives the precise, complete error
# list (and the same acceptance rules: strict types, finite numbers, known fields only).
_MAX = 1.7976931348623157e308
_F = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]  # excludes +-Infinity
# The id pattern is checked once per distinct id after decoding (`_rows`), not per field:
# a batch repeats a handful of ids, and msgspec's per-field regex was half its decode time.
_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# A full match: with `search`, `$` also matches before a final newline, which pydantic refuses.
_ID_FULL = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$")).fullmatch
_TEXT = Annotated[str, msgspec.Meta(max_length=200)]


class _Sample(msgspec.Struct, forbid_unknown_fields=True):
    procedure_id: _ID
    robot_id: _ID
    timestamp: datetime
    arm_position_x: _F | None = None
    arm_position_y: _F | None = None
    arm_position_z: _F | None = None
    arm_rotation: _F | None = None
    tool_type: _TEXT | None = None
    grip_pressure: _F | None = None
    tremor_compensation: _F | None = None
    camera_zoom: _F | None = None
    camera_angle: _F | None = None
    force_feedback_x: _F | None = None
    force_feedback_y: _F | None = None
    force_feedback_z: _F | None = None
    system_temperature: _F | None = None
    power_consumption: _F | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["telemetry"]
    records: list[_Sample]


_ONE_OR_MANY = msgspec.json.Decoder(_Sample | list[_Sample])
_BATCH = msgspec.json.Decoder(_Batch)
_ONE = msgspec.json.Decoder(_Sample)


def _rows(samples: list[_Sample]) -> list[tuple[Any, ...]] | None:
    rows = [msgspec.structs.astuple(s) for s in samples]
    ids = {r[0] for r in rows}
    ids.update(r[1] for r in rows)
    if not all(map(_ID_FULL, ids)):
        return None
    for n, r in enumerate(rows):
        ts: datetime = r[2]
        if ts.tzinfo is not UTC:  # msgspec gives `Z` and `+00:00` as UTC already
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
            rows[n] = (r[0], r[1], ts, *r[3:])
    return rows


def fast_rows(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode one sample or a JSON array of samples into rows; None when not plainly valid."""
    try:
        decoded = _ONE_OR_MANY.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return _rows(decoded if isinstance(decoded, list) else [decoded])


def fast_batch_rows(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode a `{"type": "telemetry", "records": [...]}` batch into rows, or None."""
    try:
        return _rows(_BATCH.decode(raw).records)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def fast_lines(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode NDJSON lines (one sample each) into rows, or None if any line is not valid."""
    try:
        return _rows(_ONE.decode_lines(raw))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def fast_row(raw: bytes) -> tuple[Any, ...] | None:
    """Decode one NDJSON line into a row, or None."""
    try:
        rows = _rows([_ONE.decode(raw)])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None if rows is None else rows[0]


class ChannelStats(BaseModel):
    """One channel over a procedure: how many samples carry it, and its range and mean."""

    count: int
    min: float | None
    mean: float | None = Field(description="Rounded to 3 decimals of the channel's unit.")
    max: float | None


class TelemetrySummary(BaseModel):
    """What a procedure's telemetry holds: every sample accepted for it, including samples
    since moved to the lake by retention."""

    sample_count: int
    first_timestamp: UtcDateTime | None
    last_timestamp: UtcDateTime | None
    channels: dict[str, ChannelStats] = Field(
        description="Per numeric channel (all of them, in storage order)."
    )


class TelemetrySeries(BaseModel):
    """A procedure's telemetry averaged per time bucket, column by column (for plotting).

    Bucket `i` covers `[time[i], time[i] + interval_ms)`; bucket edges are multiples of
    `interval_ms` since the Unix epoch. Buckets without samples are left out.
    """

    procedure_id: str
    interval_ms: int = Field(description="Bucket width, as asked or as chosen automatically.")
    start: UtcDateTime | None = Field(description="Lower bound asked for (inclusive).")
    end: UtcDateTime | None = Field(description="Upper bound asked for (exclusive).")
    channels: list[str]
    time: list[UtcDateTime] = Field(description="Start of each bucket.")
    samples: list[int] = Field(description="Samples in each bucket.")
    values: dict[str, list[float | None]] = Field(
        description="Per channel, the mean in each bucket (null when no sample carries it), "
        "rounded to 3 decimals of the channel's unit."
    )


def bucket_interval(first_ms: int, last_ms: int, *, max_points: int) -> int:
    """Return the smallest whole-millisecond bucket width giving at most `max_points` buckets."""
    span = max(0, last_ms - first_ms)
    # floor(last/w) - floor(first/w) <= span/w + 1, so w >= span/(max_points-1) is enough.
    width = max(1, -(-span // max(1, max_points - 1)))
    while last_ms // width - first_ms // width + 1 > max_points:
        width += 1
    return width


def bucket_count(first_ms: int, last_ms: int, width: int) -> int:
    """Return how many buckets of `width` ms the samples between the two times span."""
    return last_ms // width - first_ms // width + 1
