"""The analyst queries of docs/lake.md, run with DuckDB over the local lake through the
manifests, give what the database gives."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy import Engine, select

from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion import flows
from medrobotics.storage import archive, compact
from medrobotics.storage.lake import LocalLake
from medrobotics.storage.tables import telemetry
from tests.support.settings import for_archiving

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"
T0 = datetime(2024, 3, 30, 19, 0, tzinfo=UTC)
# The window the documented time-window query reads.
WINDOW = (datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 3, 31, 3, tzinfo=UTC))


def _blocks() -> dict[str, str]:
    """Return the documented SQL blocks by their first-line label."""
    found = re.findall(r"```sql\n-- (duckdb|query): ([^\n]*)\n(.*?)```", DOC.read_text(), re.S)
    return {f"{kind}: {name}": body for kind, name, body in found}


def _ingest(engine: Engine, n: int, *, start: datetime, seed: int = 0) -> None:
    items = [
        TelemetryIn(
            procedure_id=f"proc-{(seed + i) % 5}",
            robot_id=f"robot-{(seed + i) % 3}",
            timestamp=start + i * timedelta(minutes=13),
            arm_position_x=float((seed + i) * 7 % 23),
        )
        for i in range(n)
    ]
    for i in range(0, n, 6):
        flows.write(engine, "telemetry", [s.row() for s in items[i : i + 6]])


def _database(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """The same three answers, computed from the database's rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                telemetry.c.procedure_id,
                telemetry.c.robot_id,
                telemetry.c.timestamp,
                telemetry.c.arm_position_x,
            )
        ).all()
    per_proc = Counter(r.procedure_id for r in rows)
    per_robot_day = Counter((r.robot_id, _utc(r.timestamp).date()) for r in rows)
    window: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if WINDOW[0] <= _utc(r.timestamp) < WINDOW[1]:
            window[r.robot_id].append(r.arm_position_x)
    return {
        "samples per procedure": sorted(per_proc.items()),
        "samples per robot and day": [(r, d, n) for (r, d), n in sorted(per_robot_day.items())],
        "a time window per robot": [
            (r, len(xs), pytest.approx(sum(xs) / len(xs)), max(xs))
            for r, xs in sorted(window.items())
        ],
    }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_documented_queries_match_the_database(engine: Engine, tmp_path: Path) -> None:
    settings = for_archiving(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=10)
    lake = LocalLake(settings.lake_dir)
    _ingest(engine, 60, start=T0)
    archive.run_until_caught_up(engine, lake, settings)
    with archive.exclusive(engine, archive.TELEMETRY) as mine:
        assert mine
        compact.compact(engine, lake, settings)
    # A late sample for a compacted day, and a new day: parts beside compacted objects, files
    # with robot_id inside and (until the export writes it too) without.
    _ingest(engine, 1, start=WINDOW[0] + timedelta(minutes=1), seed=4)
    _ingest(engine, 12, start=T0 + timedelta(days=3), seed=1)
    archive.run_until_caught_up(engine, lake, settings)

    blocks = _blocks()
    setup = blocks.pop("duckdb: the current objects, from the manifests")
    assert set(blocks) == {f"query: {name}" for name in _database(engine)}
    db = duckdb.connect()
    for statement in setup.replace(".medrobotics/lake/", f"{settings.lake_dir}/").split(";"):
        if statement.strip():
            db.execute(statement)
    want = _database(engine)
    for label, sql in blocks.items():
        got = db.execute(sql).fetchall()
        assert got == want[label.removeprefix("query: ")], label
    assert sum(n for _, n in want["samples per procedure"]) == 73
