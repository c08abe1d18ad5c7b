"""Telemetry sample wire schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field

from medrobotics.domain.types import INPUT, Finite, Id, Text, UtcDateTime

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


class ChannelStats(BaseModel):
    """One channel over a procedure: how many samples carry it, and its range and mean."""

    count: int
    min: float | None
    mean: float | None
    max: float | None


class TelemetrySummary(BaseModel):
    """What a procedure's telemetry holds."""

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
        description="Per channel, the mean in each bucket (null when no sample carries it)."
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
