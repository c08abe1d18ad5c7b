"""Telemetry partitions are made ahead and retired by retention, never by what a client sends.

PostgreSQL only: SQLite has no partitions (its half of each write path runs everywhere else).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from medrobotics.cli import app as cli
from medrobotics.domain.telemetry import READINGS
from medrobotics.ingestion import flows
from medrobotics.storage import archive, partitions
from medrobotics.storage.lake import LocalLake
from medrobotics.storage.tables import telemetry, telemetry_summary
from tests.support.settings import for_archiving, for_engine

POSTGRES = pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)
pytestmark = POSTGRES


def _tables(engine: Engine) -> tuple[int, int]:
    """Return (tables and partitioned tables in the schema, partitions of telemetry)."""
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') "
                    "AND relnamespace = 'public'::regnamespace"
                )
            ).scalar_one(),
            conn.execute(
                text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass")
            ).scalar_one(),
        )


def _where(engine: Engine) -> dict[tuple[str, datetime], str]:
    """Return each sample's partition, by (procedure, timestamp)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text('SELECT procedure_id, "timestamp", tableoid::regclass::text FROM telemetry')
        )
        return {(p, t): part for p, t, part in rows}


@pytest.fixture
def keep_partitions(engine: Engine) -> Iterator[None]:
    """Drop the monthly partitions a test made, so the session's database stays as migrated."""
    with engine.connect() as conn:
        before = set(partitions.existing(conn).values())
    yield
    with engine.begin() as conn:
        for name in set(partitions.existing(conn).values()) - before:
            conn.execute(text(f"DROP TABLE {name}"))


def _month_samples(first: datetime, last: datetime) -> list[dict[str, Any]]:
    """Return one sample on the 10th of every month from `first` to `last`."""
    out, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(
            {
                "procedure_id": "proc-history",
                "robot_id": "robot-1",
                "timestamp": f"{year:04d}-{month:02d}-10T12:00:00Z",
                "arm_position_x": float(month),
            }
        )
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def test_no_request_creates_a_table(client: TestClient, engine: Engine) -> None:
    now = datetime.now(UTC)
    records = _month_samples(datetime(2001, 1, 1, tzinfo=UTC), now - timedelta(days=12))
    assert len(records) > 300
    before = _tables(engine)

    r = client.post("/ingest/batch", json={"type": "telemetry", "records": records})
    assert r.status_code == 201 and r.json()["written"] == len(records), r.text
    streamed = [s | {"procedure_id": "proc-stream"} for s in records]
    body = gzip.compress(b"\n".join(json.dumps(s).encode() for s in streamed))
    r = client.post(
        "/ingest/batch?type=telemetry",
        content=body,
        headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"},
    )
    assert r.status_code == 201 and r.json()["written"] == len(records), r.text
    for sample in records[::37]:
        r = client.post("/ingest/telemetry", json=sample | {"procedure_id": "proc-single"})
        assert r.status_code == 201, r.text
    r = client.post("/ingest/telemetry", json=[s | {"procedure_id": "proc-array"} for s in records])
    assert r.status_code == 201, r.text

    assert _tables(engine) == before
    # Every sample landed and reads back: the months made ahead in theirs, the rest in DEFAULT.
    where = _where(engine)
    assert len(where) == 3 * len(records) + len(records[::37])
    with engine.connect() as conn:
        months = partitions.existing(conn)
    for (_, at), part in where.items():
        assert part == months.get((at.year, at.month), partitions.DEFAULT)
    assert Counter(where.values())[partitions.DEFAULT] >= 3 * 300
    with engine.connect() as conn:
        got = conn.execute(
            select(telemetry.c.timestamp, telemetry.c.arm_position_x)
            .where(telemetry.c.procedure_id == "proc-history")
            .order_by(telemetry.c.timestamp)
        ).all()
    sent = [(datetime.fromisoformat(s["timestamp"]), s["arm_position_x"]) for s in records]
    assert [tuple(g) for g in got] == sent


def test_months_ahead_are_made_once(engine: Engine, keep_partitions: None) -> None:
    now = datetime(2031, 11, 20, tzinfo=UTC)
    made = partitions.maintain(engine, ahead=3, now=now)
    expected = ["telemetry_y2031m11", "telemetry_y2031m12", "telemetry_y2032m01"]
    assert made.created == [*expected, "telemetry_y2032m02"]
    tables = _tables(engine)
    again = partitions.maintain(engine, ahead=3, now=now + timedelta(days=5))
    assert again.created == [] and _tables(engine) == tables
    with engine.connect() as conn:
        have = partitions.existing(conn)
        # Made as PARTITION OF would: the parent's keys and indexes are the partition's too.
        indexes = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE tablename = 'telemetry_y2032m01'")
        ).scalars()
        kinds = sorted(i.split(" USING ")[1].split(" ")[0] for i in indexes)
    assert {(2031, 11), (2031, 12), (2032, 1), (2032, 2)} <= set(have)
    assert kinds == ["brin", "btree", "btree"]


def test_a_month_with_rows_in_default_gets_them_moved(
    engine: Engine, keep_partitions: None
) -> None:
    at = datetime(2033, 4, 5, 6, 7, tzinfo=UTC)
    rows = [
        ("proc-a", "robot-1", at + timedelta(seconds=i), *([float(i)] * 4), None, *([1.0] * 9))
        for i in range(5)
    ]
    rows.append(
        ("proc-a", "robot-1", datetime(2033, 5, 1, tzinfo=UTC), *([9.0] * 4), None, *([1.0] * 9))
    )
    flows.write(engine, "telemetry", rows)
    assert set(_where(engine).values()) == {partitions.DEFAULT}
    with engine.connect() as conn:
        summary = conn.execute(select(telemetry_summary)).mappings().one()

    assert partitions.ensure(engine, months=[(2033, 4)]) == ["telemetry_y2033m04"]
    where = _where(engine)
    assert Counter(where.values()) == {"telemetry_y2033m04": 5, partitions.DEFAULT: 1}
    with engine.connect() as conn:
        # Moved below the parent's triggers: the summary did not count them again.
        assert conn.execute(select(telemetry_summary)).mappings().one() == summary
    # A later write of the month finds its partition; a re-sent sample is still a duplicate.
    assert flows.write(engine, "telemetry", rows[:2]) == 0
    assert len(_where(engine)) == 6
    assert summary["sample_count"] == 6 and summary[f"{READINGS[0]}_count"] == 6


def test_retention_retires_archived_months(
    engine: Engine, tmp_path: Path, keep_partitions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "DELETE_SLICE", 2)  # the DEFAULT's rows go in slices
    settings = for_archiving(engine, tmp_path, MEDROBOTICS_RETENTION_DAYS=30)
    assert partitions.ensure(engine, months=[(2019, 3), (2019, 4)]) == [
        "telemetry_y2019m03",
        "telemetry_y2019m04",
    ]

    def sample(proc: str, at: datetime) -> tuple[Any, ...]:
        return (proc, "robot-1", at, *([1.0] * 4), None, *([1.0] * 9))

    old = [sample("p-old", datetime(2019, m, d, tzinfo=UTC)) for m in (3, 4) for d in (1, 2)]
    # Months without a partition: in the DEFAULT one.
    old += [sample("p-old", datetime(2018, 7, d, tzinfo=UTC)) for d in range(1, 6)]
    recent = [sample("p-new", datetime.now(UTC) - timedelta(hours=2))]
    flows.write(engine, "telemetry", old + recent)

    # Nothing is in the lake yet: retention keeps everything.
    kept = partitions.maintain(engine, ahead=3, retention_days=30)
    assert (kept.dropped, kept.rows_deleted) == ([], 0)

    report = archive.run_once(engine, LocalLake(tmp_path / "lake"), settings)
    assert report.telemetry_rows == 10
    assert report.partitions_dropped == 2 and report.rows_deleted == 5
    with engine.connect() as conn:
        assert not {(2019, 3), (2019, 4)} & set(partitions.existing(conn))
    assert {p for p, _ in _where(engine)} == {"p-new"}

    # A late sample of an old month, not in the lake yet, holds its partition back.
    partitions.ensure(engine, months=[(2019, 5)])
    flows.write(engine, "telemetry", [sample("p-late", datetime(2019, 5, 3, tzinfo=UTC))])
    held = partitions.maintain(engine, ahead=3, retention_days=30)
    assert held.dropped == []
    archive.run_once(engine, LocalLake(tmp_path / "lake"), settings)
    with engine.connect() as conn:
        assert (2019, 5) not in partitions.existing(conn)


def test_archiver_keeps_months_ahead(engine: Engine, tmp_path: Path, keep_partitions: None) -> None:
    settings = for_engine(
        engine, tmp_path, MEDROBOTICS_ARCHIVE=False, MEDROBOTICS_PARTITIONS_AHEAD=6
    )
    now = datetime.now(UTC)
    lake = LocalLake(tmp_path / "lake")
    report = archive.run_once(engine, lake, settings, now=now)
    with engine.connect() as conn:
        have = set(partitions.existing(conn))
    assert set(partitions.months_from(now, 6)) <= have
    assert report.partitions_created >= 3  # the migration made three months ahead
    assert archive.run_once(engine, lake, settings, now=now).partitions_created == 0


def test_cli_keeps_partitions(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, keep_partitions: None
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MEDROBOTICS_PARTITIONS_AHEAD", "8")
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "partitions"])
    assert first.exit_code == 0, first.output
    with engine.connect() as conn:
        have = set(partitions.existing(conn))
    assert set(partitions.months_from(datetime.now(UTC), 8)) <= have
    assert "created: telemetry_y" in first.output
    second = runner.invoke(cli, ["db", "partitions"])
    assert second.exit_code == 0 and "created: none" in second.output, second.output
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0 and "created: none" in upgraded.output, upgraded.output


def test_a_month_whose_locks_wait_is_skipped_then_made(
    engine: Engine, keep_partitions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "100ms")
    with engine.connect() as reader:
        # A long read of the DEFAULT partition holds a lock the move must wait for.
        reader.execute(text(f"SELECT count(*) FROM {partitions.DEFAULT}"))
        assert partitions.ensure(engine, months=[(2034, 1)]) == []
        reader.rollback()
    assert partitions.ensure(engine, months=[(2034, 1)]) == ["telemetry_y2034m01"]
