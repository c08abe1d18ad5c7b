"""Data for the benchmark: request-body templates, and the API's dataset made in SQL."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from medrobotics.domain.telemetry import COLUMNS, READINGS

BASE = datetime(2024, 6, 1, tzinfo=UTC)  # every ingested sample falls in June 2024
PID = "@PID@"


def sample(rng: random.Random, procedure_id: str, ts: datetime) -> dict[str, Any]:
    """One telemetry sample with every field set, as a robot sends it."""
    out: dict[str, Any] = {
        "procedure_id": procedure_id,
        "robot_id": f"r-{rng.randrange(500):04d}",
        "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    for name in READINGS:
        out[name] = round(rng.uniform(0.0, 100.0), 4)  # inside every channel's range
    out["tool_type"] = rng.choice(["scalpel", "grasper", "needle_driver", "cautery"])
    return {c: out[c] for c in COLUMNS}


def batch_template(n: int, *, ndjson: bool, seed: int = 1) -> bytes:
    """A body of `n` samples of one procedure (@PID@), 10 ms apart, robot r-0001."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        s = sample(rng, PID, BASE + timedelta(milliseconds=10 * i))
        s["robot_id"] = "r-0001"
        records.append(s)
    if ndjson:
        return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
    return json.dumps({"type": "telemetry", "records": records}, separators=(",", ":")).encode()


def fleet_template(n: int, *, robots: int = 100, seed: int = 4) -> bytes:
    """A JSON batch of `n` samples of one procedure (@PID@) from `robots` robots, 50 Hz each:
    a window of the archiver then holds every robot's part, as a fleet's does."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        s = sample(rng, PID, BASE + timedelta(milliseconds=20 * (i // robots)))
        s["robot_id"] = f"r-{i % robots:04d}"
        records.append(s)
    return json.dumps({"type": "telemetry", "records": records}, separators=(",", ":")).encode()


def fleet_ndjson(n: int, *, robots: int = 100, chunk_samples: int = 5000) -> Any:
    """Yield `n` samples of NDJSON, ~1 MB at a time: `robots` robots at 50 Hz, one procedure
    each, as one upload (one transaction) of a fleet's recording."""
    rng = random.Random(5)
    lines = []
    for r in range(robots):
        s = sample(rng, f"fleet-{r:04d}", BASE)
        s["robot_id"] = f"r-{r:04d}"
        s["timestamp"] = "@TS@"
        lines.append(json.dumps(s, separators=(",", ":")).encode() + b"\n")
    out: list[bytes] = []
    for i in range(n):
        ts = BASE + timedelta(milliseconds=20 * (i // robots))
        stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
        out.append(lines[i % robots].replace(b"@TS@", stamp))
        if len(out) == chunk_samples:
            yield b"".join(out)
            out = []
    if out:
        yield b"".join(out)


def single_template() -> bytes:
    """One sample; @PID@ and @TS@ are filled per request by bench/lua/single.lua."""
    s = sample(random.Random(2), PID, BASE)
    s["robot_id"] = "r-0002"
    s["timestamp"] = "@TS@"
    return json.dumps(s, separators=(",", ":")).encode()


def write_templates(folder: Path, *, large: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "batch_json": batch_template(1000, ndjson=False),
        "ndjson_1k": batch_template(1000, ndjson=True),
        f"ndjson_{large // 1000}k": batch_template(large, ndjson=True),
        "single": single_template(),
        "fleet_json": fleet_template(1000),
    }
    out = {}
    for name, body in files.items():
        path = folder / f"{name}.body"
        path.write_bytes(body)
        out[name] = path
    return out


def ndjson_stream(total_bytes: int, chunk_bytes: int = 1 << 20) -> Any:
    """Yield about `total_bytes` of NDJSON, ~1 MB at a time; one new procedure per chunk."""
    lines = []
    rng = random.Random(3)
    size, i = 0, 0
    while size < chunk_bytes:
        s = sample(rng, PID, BASE + timedelta(milliseconds=10 * i))
        s["robot_id"] = "r-0003"
        line = json.dumps(s, separators=(",", ":")).encode() + b"\n"
        lines.append(line)
        size += len(line)
        i += 1
    template = b"".join(lines)
    sent, n = 0, 0
    while sent < total_bytes:
        chunk = template.replace(PID.encode(), f"stream-{n:06d}".encode())
        n += 1
        sent += len(chunk)
        yield chunk


# The API dataset: robots across facilities, procedures over the last two years, outcomes
# for 90%, maintenance visits, and telemetry for the first `telemetry_procedures` procedures
# (`per_procedure` samples each, one a second from the procedure's start).
API_SQL = """
SELECT setseed(0.42);
INSERT INTO robots (robot_id, robot_serial_number, robot_model, manufacturer, installation_date,
                    facility_id, facility_name, status, last_maintenance_date, firmware_version)
SELECT 'r-' || lpad(i::text, 4, '0'), 'SN-' || i,
       (ARRAY['da Vinci Xi', 'da Vinci SP', 'Versius', 'Hugo'])[1 + i % 4], 'Acme Surgical',
       date '2019-01-01' + (i * 3), 'f-' || lpad((i % {facilities})::text, 3, '0'),
       'Facility ' || (i % {facilities}),
       CASE WHEN i % 20 = 0 THEN 'maintenance' WHEN i % 50 = 1 THEN 'retired'
            ELSE 'operational' END,
       current_date - (i % 180), '4.' || (i % 10)
FROM generate_series(0, {robots} - 1) AS i;

INSERT INTO procedures (procedure_id, robot_id, procedure_type, procedure_category, start_time,
                        end_time, duration_minutes, surgeon_id, surgeon_name, patient_id,
                        patient_age, patient_gender, complexity_score, status)
SELECT 'p-' || lpad(i::text, 8, '0'), 'r-' || lpad((i % {robots})::text, 4, '0'),
       'type-' || (i % 40),
       (ARRAY['urological','gynecological','cardiac','thoracic','general','orthopedic'])
           [1 + i % 6],
       t.start, t.start + t.minutes * interval '1 minute', t.minutes,
       's-' || (i % 2000), 'Surgeon ' || (i % 2000), 'pt-' || i, 18 + i % 80,
       (ARRAY['female','male'])[1 + i % 2], 1.0 + (i % 40) / 10.0,
       CASE WHEN i % 100 < 85 THEN 'completed' WHEN i % 100 < 87 THEN 'in_progress'
            WHEN i % 100 < 92 THEN 'aborted' ELSE 'cancelled' END
FROM generate_series(1, {procedures}) AS i,
     LATERAL (SELECT now() - random() * interval '730 days' AS start,
                     (30 + (i::bigint * 7919) % 300)::float8 AS minutes) AS t;

INSERT INTO outcomes (procedure_id, success_status, blood_loss_ml, complications,
                      hospital_stay_days, readmission_30day, patient_satisfaction_score,
                      surgeon_notes, recovery_score, follow_up_required)
SELECT procedure_id,
       CASE WHEN n % 20 < 17 THEN 'successful' WHEN n % 20 < 19 THEN 'complicated'
            ELSE 'failed' END,
       (n % 500)::float8,
       CASE WHEN n % 7 = 0 THEN '["bleeding"]'::jsonb ELSE '[]'::jsonb END,
       (n % 10)::float8, n % 25 = 0, 1 + n % 10, 'notes', 1 + n % 100, n % 3 = 0
FROM (SELECT procedure_id, substr(procedure_id, 3)::int AS n FROM procedures) AS p
WHERE n % 10 <> 0;

INSERT INTO maintenance (maintenance_id, robot_id, maintenance_date, maintenance_type,
                         technician_id, technician_name, issues_found, actions_taken,
                         parts_replaced, downtime_hours, next_maintenance_date, cost)
SELECT 'm-' || r || '-' || k, 'r-' || lpad(r::text, 4, '0'),
       current_date - (k * 36 + r % 30),
       (ARRAY['routine','emergency','upgrade','calibration'])[1 + (r + k) % 4],
       't-' || (r % 40), 'Tech ' || (r % 40), 'none', 'checked', '[]'::jsonb,
       (k % 8)::float8, current_date - (k * 36 + r % 30) + 90, 100.0 * (1 + (r + k) % 30)
FROM generate_series(0, {robots} - 1) AS r, generate_series(0, 19) AS k;
"""

TELEMETRY_SQL = """
INSERT INTO telemetry (procedure_id, robot_id, "timestamp", arm_position_x, arm_position_y,
                       arm_position_z, arm_rotation, tool_type, grip_pressure,
                       tremor_compensation, camera_zoom, camera_angle, force_feedback_x,
                       force_feedback_y, force_feedback_z, system_temperature, power_consumption)
SELECT p.procedure_id, p.robot_id, p.start_time + make_interval(secs => g),
       random() * 100, random() * 100, random() * 100, random() * 360,
       (ARRAY['scalpel','grasper','needle_driver','cautery'])[1 + g %% 4],
       random() * 10, random(), 1 + random() * 9, random() * 90,
       random() * 5, random() * 5, random() * 5, 30 + random() * 10, 200 + random() * 50
FROM (SELECT procedure_id, robot_id, start_time FROM procedures
      WHERE procedure_id BETWEEN %(lo)s AND %(hi)s) AS p,
     generate_series(0, %(per)s - 1) AS g
"""


def months_between(first: datetime, last: datetime) -> set[tuple[int, int]]:
    out, y, m = set(), first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.add((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def build_api_dataset(
    url: str,
    *,
    procedures: int,
    telemetry_procedures: int,
    per_procedure: int,
    robots: int = 500,
    facilities: int = 50,
    rollup: bool = True,
) -> dict[str, Any]:
    """Fill the database (already migrated, empty) in SQL; return counts and timings."""
    from sqlalchemy import create_engine

    from medrobotics.storage import partitions

    telemetry_procedures = min(telemetry_procedures, procedures)
    sql = API_SQL.format(robots=robots, facilities=facilities, procedures=procedures)
    timings: dict[str, float] = {}
    import time

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE robots, procedures, outcomes, maintenance, telemetry CASCADE")
        with conn.transaction():
            for stmt in sql.split(";\n"):
                if stmt.strip():
                    conn.execute(stmt)  # type: ignore[arg-type]
        timings["relational_s"] = time.perf_counter() - t0
        first, last = conn.execute(
            "SELECT min(start_time), max(start_time) FROM procedures"
        ).fetchone()
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        # The benchmark's months get partitions of their own, as months ahead would have.
        partitions.ensure(
            engine, months=sorted(months_between(first, last + timedelta(seconds=per_procedure)))
        )
        engine.dispose()
        t1 = time.perf_counter()
        step = 1000
        for lo in range(1, telemetry_procedures + 1, step):
            hi = min(lo + step - 1, telemetry_procedures)
            conn.execute(
                TELEMETRY_SQL,  # type: ignore[arg-type]
                {"lo": f"p-{lo:08d}", "hi": f"p-{hi:08d}", "per": per_procedure},
            )
        timings["telemetry_s"] = time.perf_counter() - t1
        # As the archiver's pass does in a deployment: the closed days rolled up for analytics.
        if rollup:
            t2 = time.perf_counter()
            from medrobotics.storage import analytics

            engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
            timings["rolled_days"] = analytics.roll_up_closed_days(engine)
            engine.dispose()
            timings["rollup_s"] = time.perf_counter() - t2
        conn.execute("VACUUM ANALYZE")
        # Measured from a settled machine: the load's gigabytes written out now, not by the
        # checkpointer and the kernel during the first figures (a run of 00:35 UTC had its
        # first list's p99 at 60 ms, the next lists at 12-16 ms).
        conn.execute("CHECKPOINT")
        os.sync()
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("robots", "procedures", "outcomes", "maintenance", "telemetry")
        }
    timings["total_s"] = time.perf_counter() - t0
    return {"counts": counts, "timings": timings}
