"""Telemetry sample wire schemas."""

from __future__ import annotations

from pydantic import BaseModel

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
