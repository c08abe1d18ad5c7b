"""Small factories for wire records (plain dicts, as clients send them)."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2025, 10, 27, 9, 0, tzinfo=UTC)


def robot(n: int = 1, **kw: Any) -> dict[str, Any]:
    """Return a robot record."""
    return {
        "robot_id": f"robot-{n}",
        "robot_serial_number": f"SN-{n:05d}",
        "robot_model": "DaVinci Xi",
        "manufacturer": "Intuitive Surgical",
        "installation_date": "2022-01-15",
        "facility_id": f"fac-{n % 3}",
        "facility_name": f"Hospital {n % 3}",
        "status": "operational",
        "firmware_version": "4.2.1",
    } | kw


def procedure(n: int = 1, robot_n: int = 1, **kw: Any) -> dict[str, Any]:
    """Return a completed procedure record."""
    start = T0 + timedelta(hours=n)
    return {
        "procedure_id": f"proc-{n}",
        "robot_id": f"robot-{robot_n}",
        "procedure_type": "Radical Prostatectomy",
        "procedure_category": "urological",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=150)).isoformat(),
        "surgeon_id": "surg-1",
        "surgeon_name": "Dr. Grey",
        "patient_id": f"pat-{n}",
        "patient_age": 61,
        "patient_gender": "M",
        "complexity_score": 3.5,
        "status": "completed",
    } | kw


def outcome(n: int = 1, **kw: Any) -> dict[str, Any]:
    """Return an outcome record for procedure n."""
    return {
        "procedure_id": f"proc-{n}",
        "success_status": "successful",
        "blood_loss_ml": 150.0,
        "complications": [],
        "hospital_stay_days": 2,
        "readmission_30day": False,
        "patient_satisfaction_score": 9,
        "surgeon_notes": "uneventful",
        "recovery_score": 88,
        "follow_up_required": True,
    } | kw


def visit(n: int = 1, robot_n: int = 1, **kw: Any) -> dict[str, Any]:
    """Return a maintenance record."""
    return {
        "maintenance_id": f"m-{n}",
        "robot_id": f"robot-{robot_n}",
        "maintenance_date": "2025-06-01",
        "maintenance_type": "routine",
        "technician_id": "tech-1",
        "technician_name": "Sam",
        "issues_found": "none",
        "actions_taken": "calibrated arms",
        "parts_replaced": ["filter"],
        "downtime_hours": 4,
        "next_maintenance_date": "2025-09-01",
        "cost": 1250.0,
    } | kw


def samples(
    count: int, *, procedure_n: int = 1, robot_n: int = 1, start: datetime = T0, every_ms: int = 10
) -> list[dict[str, Any]]:
    """Return `count` telemetry samples, `every_ms` apart."""
    out = []
    for i in range(count):
        ts = start + timedelta(milliseconds=i * every_ms)
        out.append(
            {
                "procedure_id": f"proc-{procedure_n}",
                "robot_id": f"robot-{robot_n}",
                "timestamp": ts.isoformat(),
                "arm_position_x": 100.0 + i % 1000,  # inside the channel's range
                "arm_position_y": 200.0 - i % 1000,
                "arm_position_z": 150.0,
                "arm_rotation": 12.5,
                "tool_type": "Grasper",
                "grip_pressure": 2.5,
                "tremor_compensation": 95.0,
                "camera_zoom": 2.0,
                "camera_angle": 30.0,
                "force_feedback_x": 0.1,
                "force_feedback_y": 0.2,
                "force_feedback_z": 0.3,
                "system_temperature": 36.6,
                "power_consumption": 450.0,
            }
        )
    return out


def gzip_bomb(unit: bytes, times: int, *, head: bytes = b"") -> bytes:
    """Return a valid gzip of `head` then `unit` repeated `times` times, built in milliseconds.

    Each repeat is one raw deflate block ended by a full flush, which resets the compressor:
    every later repeat compresses to the same bytes, so 1 GiB of newlines costs one MiB's work.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH) if head else b""
    block = deflate.compress(unit) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(unit, crc)
    size = len(head) + len(unit) * times
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + block * times + end + struct.pack("<II", crc, size & 0xFFFFFFFF)
