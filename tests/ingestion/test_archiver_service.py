"""`medrobotics archiver`: the archiver in a process of its own, as the ECS service runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from sqlalchemy import func, select

from medrobotics import config
from medrobotics.storage import archive, migrate
from medrobotics.storage.db import make_engine
from medrobotics.storage.tables import telemetry

T0 = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)
SAMPLES = 60


def _lake_rows(lake: Path) -> list[tuple[str, str, datetime]]:
    rows = []
    for path in sorted(lake.rglob("*.parquet")):
        table = pq.read_table(path, columns=["procedure_id", "timestamp"])
        robot = path.parent.name.removeprefix("robot_id=")
        for proc, ts in zip(
            table.column("procedure_id").to_pylist(),
            table.column("timestamp").to_pylist(),
            strict=True,
        ):
            rows.append((proc, robot, ts))
    return rows


def test_archiver_command_archives_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "MEDROBOTICS_DATA_DIR": str(data),
        "MEDROBOTICS_ARCHIVE_INTERVAL": "0.2",
        "MEDROBOTICS_ARCHIVE_SAFETY": "0",  # archive what the test just committed
        "MEDROBOTICS_LOG_FORMAT": "json",
        "MEDROBOTICS_METRICS": "emf",
        "MEDROBOTICS_EMF_INTERVAL": "0.2",
    }
    for name in ("DATABASE_URL", "RDS_HOST", "S3_RAW_BUCKET", "MEDROBOTICS_ARCHIVE"):
        env.pop(name, None)
    settings = config.load(MEDROBOTICS_DATA_DIR=str(data), environment="test")
    engine = make_engine(settings.db_url, pool_size=2)
    migrate.upgrade(engine)
    received = datetime.now(UTC) - timedelta(minutes=5)
    with engine.begin() as conn:
        conn.execute(
            telemetry.insert(),
            [
                {
                    "procedure_id": f"proc-{i % 4}",
                    "robot_id": f"robot-{i % 3}",
                    "timestamp": T0 + i * timedelta(minutes=3),  # crosses midnight
                    "arm_position_x": float(i),
                    "received_at": received,
                }
                for i in range(SAMPLES)
            ],
        )

    proc = subprocess.Popen(
        [sys.executable, "-m", "medrobotics", "archiver"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Wait (bounded) until the archiver has caught up with what was committed.
        deadline = time.monotonic() + 60
        while True:
            with engine.connect() as conn:
                pending = archive.lag(conn)["pending_rows"]
            if pending == 0 or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the archiver exited on its own"
        assert pending == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]

    # Every sample once, under the layout's keys.
    rows = _lake_rows(data / "lake" / "raw" / "telemetry")
    with engine.connect() as conn:
        stored = conn.execute(
            select(telemetry.c.procedure_id, telemetry.c.robot_id, telemetry.c.timestamp)
        ).all()
        assert conn.execute(select(func.count()).select_from(telemetry)).scalar() == SAMPLES
    assert sorted(rows) == sorted((p, r, ts) for p, r, ts in stored)
    assert {p.parent.parent.name for p in (data / "lake").rglob("part-*.parquet")} == {
        "date=2024-03-30",
        "date=2024-03-31",
    }

    # Every stdout line is JSON: log lines of the archiver, and EMF lines carrying the lag.
    lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    events = [line.get("event") for line in lines if line.get("service") == "archiver"]
    assert events[0] == "starting" and events[-1] == "stopped"
    emf = [line for line in lines if "_aws" in line]
    assert emf and all(line["Service"] == "archiver" for line in emf)
    assert all("Requests" not in line for line in emf), "the archiver serves no HTTP"
    lag = [line for line in emf if "ArchiveLagSeconds" in line]
    assert lag, "the lag reaches CloudWatch through the EMF lines"
    assert lag[-1]["ArchivePendingRows"] == 0
    names = {m["Name"] for m in lag[-1]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"ArchiveLagSeconds", "ArchivePendingRows"}
    engine.dispose()
