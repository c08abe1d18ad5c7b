"""Telemetry sample wire schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from pydantic import BaseModel, Field

from medrobotics.domain.types import (
    ID_PATTERN,
    INPUT,
    EventTime,
    Id,
    Text,
    UtcDateTime,
    plain,
    time_window,
)

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


class Range(NamedTuple):
    """The values a reading may take, inclusive, in its unit."""

    low: float
    high: float
    unit: str


# Generous physical ranges (docs/data-rules.md): every real reading fits, and a billion samples
# of the largest still sum to a finite number on both databases.
POSITION = Range(-10_000, 10_000, "mm")
ROTATION = Range(-3_600, 3_600, "degrees")  # multi-turn joints report up to ten turns
GRIP = Range(-100, 1_000, "N")  # a sensor's zero offset may read slightly below 0
PERCENT = Range(0, 100, "%")
ZOOM = Range(0, 100, "x")
CAMERA_ANGLE = Range(-360, 360, "degrees")
FORCE = Range(-1_000, 1_000, "N")
TEMPERATURE = Range(-50, 200, "°C")
POWER = Range(0, 100_000, "W")

RANGES: dict[str, Range] = {
    "arm_position_x": POSITION,
    "arm_position_y": POSITION,
    "arm_position_z": POSITION,
    "arm_rotation": ROTATION,
    "grip_pressure": GRIP,
    "tremor_compensation": PERCENT,
    "camera_zoom": ZOOM,
    "camera_angle": CAMERA_ANGLE,
    "force_feedback_x": FORCE,
    "force_feedback_y": FORCE,
    "force_feedback_z": FORCE,
    "system_temperature": TEMPERATURE,
    "power_consumption": POWER,
}
"""Each channel's range; the model and the fast decoder below hold the same (a test checks)."""

Position = Annotated[float, Field(ge=POSITION.low, le=POSITION.high)]
Rotation = Annotated[float, Field(ge=ROTATION.low, le=ROTATION.high)]
Grip = Annotated[float, Field(ge=GRIP.low, le=GRIP.high)]
Percent = Annotated[float, Field(ge=PERCENT.low, le=PERCENT.high)]
Zoom = Annotated[float, Field(ge=ZOOM.low, le=ZOOM.high)]
CameraAngle = Annotated[float, Field(ge=CAMERA_ANGLE.low, le=CAMERA_ANGLE.high)]
Force = Annotated[float, Field(ge=FORCE.low, le=FORCE.high)]
Temperature = Annotated[float, Field(ge=TEMPERATURE.low, le=TEMPERATURE.high)]
Power = Annotated[float, Field(ge=POWER.low, le=POWER.high)]


class TelemetryIn(BaseModel):
    """One reading streamed by a robot during a procedure; keyed by robot, procedure and time.

    The procedure need not exist yet: telemetry streams during surgery, the procedure record
    often comes afterwards.
    """

    model_config = INPUT

    procedure_id: Id
    robot_id: Id
    timestamp: EventTime
    arm_position_x: Position | None = None
    arm_position_y: Position | None = None
    arm_position_z: Position | None = None
    arm_rotation: Rotation | None = None
    tool_type: Text | None = None
    grip_pressure: Grip | None = None
    tremor_compensation: Percent | None = None
    camera_zoom: Zoom | None = None
    camera_angle: CameraAngle | None = None
    force_feedback_x: Force | None = None
    force_feedback_y: Force | None = None
    force_feedback_z: Force | None = None
    system_temperature: Temperature | None = None
    power_consumption: Power | None = None

    def row(self) -> tuple[object, ...]:
        """Return the values in table order, for the bulk writer."""
        d = self.__dict__
        return tuple(d[c] for c in COLUMNS)


# The fast decoder. Telemetry arrives by the million; pydantic's per-record cost would make
# validation the ceiling of the whole ingest path (see docs/benchmarks.md). msgspec decodes the
# same schema in C, several times faster. It only ever says "valid, here are the rows" or "not
# sure": anything it refuses goes through TelemetryIn, which gives the precise, complete error
# list (and the same acceptance rules: strict types, ranges, text and time rules, known fields
# only). It must never accept what TelemetryIn refuses (tests/domain/test_telemetry_fast.py).
_POSITION = Annotated[float, msgspec.Meta(ge=POSITION.low, le=POSITION.high)]
_ROTATION = Annotated[float, msgspec.Meta(ge=ROTATION.low, le=ROTATION.high)]
_GRIP = Annotated[float, msgspec.Meta(ge=GRIP.low, le=GRIP.high)]
_PERCENT = Annotated[float, msgspec.Meta(ge=PERCENT.low, le=PERCENT.high)]
_ZOOM = Annotated[float, msgspec.Meta(ge=ZOOM.low, le=ZOOM.high)]
_CAMERA_ANGLE = Annotated[float, msgspec.Meta(ge=CAMERA_ANGLE.low, le=CAMERA_ANGLE.high)]
_FORCE = Annotated[float, msgspec.Meta(ge=FORCE.low, le=FORCE.high)]
_TEMPERATURE = Annotated[float, msgspec.Meta(ge=TEMPERATURE.low, le=TEMPERATURE.high)]
_POWER = Annotated[float, msgspec.Meta(ge=POWER.low, le=POWER.high)]
# The id pattern is checked once per distinct id after decoding (`_rows`), not per field:
# a batch repeats a handful of ids, and msgspec's per-field regex was half its decode time.
# The same for the text rule on `tool_type`.
_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# A full match: with `search`, `$` also matches before a final newline, which pydantic refuses.
_ID_FULL = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$")).fullmatch
_TEXT = Annotated[str, msgspec.Meta(max_length=200)]
_TOOL = COLUMNS.index("tool_type")
# Times are decoded as text first: msgspec rounds a fraction finer than the microsecond where
# pydantic truncates it, so such a time is left to the model (one sample, one stored time).
_FINER_THAN_MICROSECONDS = re.compile(r"\.\d{7}").search


class _Sample(msgspec.Struct, forbid_unknown_fields=True):
    procedure_id: _ID
    robot_id: _ID
    timestamp: str  # read as a time in `_rows`
    arm_position_x: _POSITION | None = None
    arm_position_y: _POSITION | None = None
    arm_position_z: _POSITION | None = None
    arm_rotation: _ROTATION | None = None
    tool_type: _TEXT | None = None
    grip_pressure: _GRIP | None = None
    tremor_compensation: _PERCENT | None = None
    camera_zoom: _ZOOM | None = None
    camera_angle: _CAMERA_ANGLE | None = None
    force_feedback_x: _FORCE | None = None
    force_feedback_y: _FORCE | None = None
    force_feedback_z: _FORCE | None = None
    system_temperature: _TEMPERATURE | None = None
    power_consumption: _POWER | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["telemetry"]
    records: list[_Sample]


_ONE_OR_MANY = msgspec.json.Decoder(_Sample | list[_Sample])
_BATCH = msgspec.json.Decoder(_Batch)
_ONE = msgspec.json.Decoder(_Sample)
# What a decoder raises on input it will not take: bad JSON, a failed rule, bytes not UTF-8.
_REFUSED = (msgspec.DecodeError, UnicodeDecodeError)


def _rows(samples: list[_Sample]) -> list[tuple[Any, ...]] | None:
    rows = [msgspec.structs.astuple(s) for s in samples]
    ids = {r[0] for r in rows}
    ids.update(r[1] for r in rows)
    if not all(map(_ID_FULL, ids)):
        return None
    tools = {r[_TOOL] for r in rows}
    tools.discard(None)
    if not all(map(plain, tools)):
        return None
    texts = [r[2] for r in rows]
    if _FINER_THAN_MICROSECONDS(" ".join(texts)):
        return None
    try:
        times = msgspec.convert(texts, list[datetime])
    except (msgspec.ValidationError, ValueError):
        return None
    window = time_window()
    earliest, latest = window.earliest, window.latest()
    for n, ts in enumerate(times):
        if ts.tzinfo is not UTC:  # msgspec gives `Z` and `+00:00` as UTC already
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            elif earliest <= ts <= latest:  # compared first: converting may overflow
                ts = ts.astimezone(UTC)
            else:
                return None
            times[n] = ts
    if times and (min(times) < earliest or max(times) > latest):
        return None
    return [(r[0], r[1], ts, *r[3:]) for r, ts in zip(rows, times, strict=True)]


def fast_rows(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode one sample or a JSON array of samples into rows; None when not plainly valid."""
    try:
        decoded = _ONE_OR_MANY.decode(raw)
    except _REFUSED:
        return None
    return _rows(decoded if isinstance(decoded, list) else [decoded])


def fast_batch_rows(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode a `{"type": "telemetry", "records": [...]}` batch into rows, or None."""
    try:
        return _rows(_BATCH.decode(raw).records)
    except _REFUSED:
        return None


def fast_lines(raw: bytes) -> list[tuple[Any, ...]] | None:
    """Decode NDJSON lines (one sample each) into rows, or None if any line is not valid."""
    try:
        return _rows(_ONE.decode_lines(raw))
    except _REFUSED:
        return None


def fast_row(raw: bytes) -> tuple[Any, ...] | None:
    """Decode one NDJSON line into a row, or None."""
    try:
        rows = _rows([_ONE.decode(raw)])
    except _REFUSED:
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
