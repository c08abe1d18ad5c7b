"""Compaction figures: one closed day of a fleet archived in 30-second windows, then compacted."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

HZ = 50  # samples per robot per second, as the guide's fleet sends them
WINDOW_S = 30  # the archiver's default interval: one window per pass at steady state
DAY = "2024-06-10"  # closed, inside the partition the benchmark makes

# Made by the server: no Python per row. Robot r sends every 20 ms from midnight; each sample
# is received a second after it was taken.
_FILL = """
INSERT INTO telemetry (procedure_id, robot_id, "timestamp", arm_position_x, arm_position_y,
                       arm_position_z, arm_rotation, tool_type, grip_pressure,
                       tremor_compensation, camera_zoom, camera_angle, force_feedback_x,
                       force_feedback_y, force_feedback_z, system_temperature,
                       power_consumption, received_at)
SELECT 'proc-' || (g %% %(robots)s) || '-' || (g / %(robots)s / 90000),
       'robot-' || lpad((g %% %(robots)s)::text, 4, '0'),
       t, random() * 200 - 100, random() * 200 - 100, random() * 200 - 100,
       random() * 360, 'grasper', random() * 10, random(), 1 + random() * 9, random() * 90,
       random() * 20 - 10, random() * 20 - 10, random() * 20 - 10, 30 + random() * 20,
       200 + random() * 100, t + interval '1 second'
FROM generate_series(0, %(n)s - 1) AS g,
     LATERAL (SELECT %(day)s::timestamptz
                     + make_interval(secs => (g / %(robots)s) * 1.0 / %(hz)s) AS t) AS s
"""


def measure(url: str, *, samples: int, robots: int) -> dict[str, Any]:
    """Fill a closed day, archive it, compact it; return rows/s and objects per 1M samples."""
    from medrobotics import config
    from medrobotics.storage import archive, compact
    from medrobotics.storage.db import make_engine
    from medrobotics.storage.lake import LocalLake

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE telemetry, archive_marks")
        conn.execute(_FILL, {"n": samples, "robots": robots, "day": DAY, "hz": HZ})
        conn.execute("VACUUM ANALYZE telemetry")
    with tempfile.TemporaryDirectory(prefix="bench-compact-") as tmp:
        settings = config.load(
            database_url=url.replace("postgresql://", "postgresql+psycopg://"),
            MEDROBOTICS_DATA_DIR=tmp,
            MEDROBOTICS_ARCHIVE=False,
            MEDROBOTICS_ARCHIVE_SAFETY=0,
            # Steady state: each pass exports what the fleet sent during one interval.
            MEDROBOTICS_ARCHIVE_BATCH_ROWS=robots * HZ * WINDOW_S,
            MEDROBOTICS_COMPACT_INTERVAL=10**9,  # compaction is timed on its own below
        )
        engine = make_engine(settings.db_url, pool_size=2)
        lake = LocalLake(Path(tmp) / "lake")
        try:
            archive.run_until_caught_up(engine, lake, settings)
            before = _objects(lake)
            t0 = time.perf_counter()
            with archive.exclusive(engine, archive.TELEMETRY) as mine:
                if not mine:
                    raise RuntimeError("another archiver holds the lake")
                report = compact.compact(engine, lake, settings)
            seconds = time.perf_counter() - t0
            after = _objects(lake)
        finally:
            engine.dispose()
    if report.rows != samples:
        raise RuntimeError(f"compaction rewrote {report.rows} of {samples} samples")
    return {
        "rows_per_s": report.rows / seconds,
        "seconds": seconds,
        "objects_before": before,
        "objects_after": after,
        "per_million_before": before * 1_000_000 / samples,
        "per_million_after": after * 1_000_000 / samples,
    }


def _objects(lake: Any) -> int:
    return sum(1 for k in lake.list("raw/telemetry/date=") if k.endswith(".parquet"))
